"""Training checkpoints: open_clip's keys plus what an exact resume needs, written atomically.

Keys: ``epoch`` (epochs completed), ``name``, ``state_dict``, ``optimizer``, ``scaler`` (open_clip's), plus
``step`` (optimizer steps so far), ``batch_in_epoch`` and ``stream_position`` (where a mid-epoch save stands),
``rng`` (torch, CUDA, Python and NumPy states), ``args`` (the TrainConfig) and ``memclip_config`` (so
``memclip.create_model(name, pretrained=ckpt)`` rebuilds the model). All of it loads with ``weights_only=True``.
"""
from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from memclip.checkpoint import CONFIG_KEY, atomic_write_bytes

logger = logging.getLogger(__name__)

LATEST = "epoch_latest.pt"
_EPOCH_FILE = re.compile(r"epoch_(\d+)\.pt$")


@dataclass
class TrainState:
    """Progress of a run: epochs completed, batches done in the current epoch, optimizer steps, stream position."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    stream_position: Dict[str, Any] = field(default_factory=dict)


def capture_rng() -> Dict[str, Any]:
    python = random.getstate()
    numpy = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [python[0], list(python[1]), python[2]],
        "numpy": [numpy[0], torch.from_numpy(numpy[1].astype(np.int64)), numpy[2], numpy[3], numpy[4]],
    }


def restore_rng(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer_state: Dict[str, Any],
                    scaler: Optional[Any], state: TrainState, name: str, args: Dict[str, Any]) -> None:
    """Write a checkpoint through a temporary file and a rename (a reader never sees half of one).

    ``optimizer_state`` is the optimizer's state dict (with full value tables when they are sharded).
    """
    payload = {
        "epoch": state.epoch,
        "name": name,
        "state_dict": model.state_dict(),
        "optimizer": optimizer_state,
        "step": state.step,
        "batch_in_epoch": state.batch_in_epoch,
        "stream_position": state.stream_position,
        "rng": capture_rng(),
        "args": args,
        CONFIG_KEY: model.memclip_spec.to_config(),
    }
    if scaler is not None:
        payload["scaler"] = scaler.state_dict()
    atomic_write_bytes(path, lambda tmp: torch.save(payload, tmp))
    logger.info("saved %s (epoch %d, step %d)", path, state.epoch, state.step)


def load_checkpoint(path: Path) -> Dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def find_resume_checkpoint(folder: Path) -> Optional[Path]:
    """The newest checkpoint in ``folder``: ``epoch_latest.pt`` if it loads, else the highest ``epoch_N.pt``."""
    candidates = []
    if (folder / LATEST).is_file():
        candidates.append(folder / LATEST)
    numbered = sorted((int(m.group(1)), p) for p in folder.glob("epoch_*.pt") if (m := _EPOCH_FILE.search(p.name)))
    candidates.extend(p for _, p in reversed(numbered))
    for path in candidates:
        try:
            load_checkpoint(path)
            return path
        except Exception as error:  # a damaged file: fall back to the next newest, and say so
            logger.warning("cannot read %s (%s); trying an older checkpoint", path, error)
    return None
