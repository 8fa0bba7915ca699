"""`generate_world`: write every split of the synthetic world, in parallel, deterministically.

Worker processes compute items in chunks (``splits.make_items``); the parent receives them in index order and
writes them, so the output is byte-identical for any number of workers. world.json is removed first and written
last: a folder with a world.json holds a complete world, and world.json lists every file and folder of it, so that
``--overwrite`` removes exactly those (see ``manifest.py``).
"""
from __future__ import annotations

import logging
import multiprocessing
import platform
import time
from contextlib import ExitStack
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import PIL
from tqdm import tqdm

from memclip.atomic_io import atomic_write_json
from memclip.errors import InputError

from .config import FORMAT_VERSION, SPLITS, SynthConfig
from .manifest import WORLD_FILE, WorldFiles, remove_generated
from .splits import Item, make_items
from .writers import WRITERS

logger = logging.getLogger(__name__)

def prepare_output(out: Union[str, Path], overwrite: bool) -> Path:
    """Make ``out`` ready: refuse a non-empty folder unless ``overwrite``; then remove only what a previous
    generation wrote there (the files its world.json lists, or an interrupted generation recorded), never other files.

    Raises:
        FileExistsError: ``out`` is a file; or non-empty and ``overwrite`` is false; or non-empty without a generated
            world to replace.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"--out {out} is not empty; pass --overwrite to replace a generated world there")
        remove_generated(out)
        left = sorted(p.name for p in out.iterdir())
        if left:
            logger.warning("--overwrite kept files it did not write in %s: %s", out, ", ".join(left[:5]))
    out.mkdir(parents=True, exist_ok=True)
    return out


def _chunks(config: SynthConfig, split: str, chunk_size: int) -> List[tuple]:
    size = config.split_size(split)
    return [(config, split, start, min(start + chunk_size, size)) for start in range(0, size, chunk_size)]


def _items(tasks: Sequence[tuple], pool: Optional[Any]) -> Iterator[List[Item]]:
    if pool is None:
        return map(make_items, tasks)
    return pool.imap(make_items, tasks)


def software_versions() -> Dict[str, str]:
    """Versions that can change the bytes of the output (JPEG and PNG encoders, random streams)."""
    try:
        memclip_version = metadata.version("memclip")
    except metadata.PackageNotFoundError:
        memclip_version = "unknown"
    return {"memclip": memclip_version, "python": platform.python_version(), "pillow": PIL.__version__,
            "numpy": np.__version__}


def generate_world(
    config: SynthConfig,
    out: Union[str, Path],
    workers: int = 1,
    overwrite: bool = False,
    chunk_size: int = 64,
    progress: Optional[bool] = None,
) -> Dict[str, Any]:
    """Write the world described by ``config`` under ``out`` and return world.json's content.

    Args:
        config: the generator settings.
        out: output folder (must be empty or missing unless ``overwrite``).
        workers: processes that render images (1 = in this process).
        overwrite: replace a world previously generated in ``out``.
        chunk_size: items per task sent to a worker.
        progress: show tqdm bars (None: only on a terminal).
    """
    if workers < 1:
        raise InputError(f"workers={workers}: must be >= 1")
    out = prepare_output(out, overwrite)
    files = WorldFiles(out)
    started = time.time()
    summaries: Dict[str, Any] = {}
    with ExitStack() as stack:
        pool = stack.enter_context(multiprocessing.get_context().Pool(workers)) if workers > 1 else None
        for split in SPLITS:
            total = config.split_size(split)
            if total == 0:
                summaries[split] = {"skipped": True}
                continue
            writer = WRITERS[split](out / split, config, files)
            disable = None if progress is None else not progress
            with tqdm(total=total, desc=f"{split:>12}", unit=" items", disable=disable) as bar:
                try:
                    for items in _items(_chunks(config, split, chunk_size), pool):
                        for item in items:
                            writer.add(item)
                        bar.update(len(items))
                except BaseException:
                    if hasattr(writer, "abort"):
                        writer.abort()
                    raise
            summaries[split] = writer.close()
    world = {
        "format": "memclip-synth-world",
        "version": FORMAT_VERSION,
        "seed": config.seed,
        "arguments": config.arguments(),
        "vocabularies": config.world.vocabularies(),
        "splits": summaries,
        "software": software_versions(),
        **files.finish(),
    }
    atomic_write_json(out / WORLD_FILE, world)
    files.discard_pending()
    logger.info("wrote the synthetic world to %s in %.1fs", out, time.time() - started)
    return world
