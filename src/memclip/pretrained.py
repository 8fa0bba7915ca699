"""Pretrained weights that ship inside the package, found by (architecture, tag) like open_clip's tags.

Each entry is three files in ``memclip/pretrained/``: ``<model>-<tag>.safetensors`` (the weights, with the model's
memclip config in the metadata), ``<model>-<tag>.json``, its record: the sha256 and size of the weights, the
command and seed that made them, and the metrics measured on them, and ``<model>-<tag>.md``, the model card made
from the record (:func:`shipped_card`, what ``python -m memclip_train.push_to_hub`` uploads with them). Today one
entry ships:
``ViT-Tiny-8`` / ``synth``, a tiny CLIP pretrained on the synthetic world's scene stream, so that
``memclip.create_model("ViT-Tiny-8", pretrained="synth")`` works offline on a fresh clone.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import open_clip.pretrained
import torch
from torch import nn

from .errors import InputError

logger = logging.getLogger(__name__)

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
RECORD_FIELDS = ("model", "tag", "weights", "sha256", "bytes")

# Captured at import, so that memclip.register_open_clip() can point open_clip's listings here without recursion.
_open_clip_list_pretrained = open_clip.pretrained.list_pretrained
_open_clip_tags_by_model = open_clip.pretrained.list_pretrained_tags_by_model


def _records(directory: Optional[Path] = None) -> Dict[tuple, Dict[str, Any]]:
    """(model, tag) -> record, for every valid record file. A file that is not a valid record is skipped with a
    warning naming it, and is an error only when its ``<model>-<tag>`` is asked for (:func:`shipped_record`)."""
    records = {}
    for path in sorted((directory or PRETRAINED_DIR).glob("*.json")):
        problem = _record_problem(path)
        if problem:
            logger.warning("skipping %s: %s", path, problem)
            continue
        record = json.loads(path.read_text(encoding="utf-8"))
        records[(record["model"], record["tag"])] = dict(record, record_path=str(path))
    return records


def _record_problem(path: Path) -> str:
    """Why ``path`` is not a shipped-weights record ('' when it is one)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return f"not valid JSON ({error})"
    if not isinstance(record, dict) or not all(key in record for key in RECORD_FIELDS):
        return f"not a record of shipped weights (it needs {list(RECORD_FIELDS)})"
    return ""


def list_shipped_tags(model: str) -> List[str]:
    """The tags of ``model`` whose weights ship with memclip (e.g. ``["synth"]`` for ViT-Tiny-8)."""
    return sorted(tag for (name, tag) in _records() if name == model)


def list_pretrained(as_str: bool = False) -> List[Union[Tuple[str, str], str]]:
    """Every (architecture, tag) whose complete weights load by tag, as ``open_clip.list_pretrained``: open_clip's
    and those that ship with memclip (``("ViT-Tiny-8", "synth")``), or ``"name:tag"`` strings with ``as_str``.

    A memory model loads its teacher's tags too (``create_model("ViT-B-16-mem", pretrained="openai")``), but with
    fresh memory, so those are not listed: see ``list_pretrained_tags_by_model(spec.teacher)``.
    """
    pairs = list(_open_clip_list_pretrained()) + sorted((name, tag) for name, tag in _records())
    return [f"{name}:{tag}" for name, tag in pairs] if as_str else pairs


def list_pretrained_tags_by_model(model: str) -> List[str]:
    """The tags of ``model``'s complete weights: open_clip's, then those that ship with memclip."""
    return list(_open_clip_tags_by_model(model)) + list_shipped_tags(model)


def shipped_record(model: str, tag: str) -> Optional[Dict[str, Any]]:
    """The record of a shipped checkpoint (command, seed, metrics, sha256), or None if there is none.

    Raises:
        InputError: the record file of ``<model>-<tag>`` exists but is damaged (the message names it).
    """
    record = _records().get((model, tag))
    named = PRETRAINED_DIR / f"{model}-{tag}.json"
    if record is None and named.is_file() and _record_problem(named):
        raise InputError(f"memclip's pretrained '{tag}' record for {model} is damaged: {named} is "
                         f"{_record_problem(named)}; reinstall memclip")
    return record


def card_path(model: str, tag: str, directory: Path = PRETRAINED_DIR) -> Path:
    """``<model>-<tag>.md``: the model card of shipped weights, beside their record."""
    return Path(directory) / f"{model}-{tag}.md"


def shipped_card(model: str, tag: str, repo_id: Optional[str] = None,
                 directory: Path = PRETRAINED_DIR) -> Optional[str]:
    """The model card of shipped weights, made from their JSON record and the config in their metadata (the load
    snippet names ``hf-hub:<repo_id>`` too when given); None when ``(model, tag)`` ships nothing."""
    from safetensors import safe_open

    from .model_card import facts_from_shipped_record, render_card
    from .registry import CONFIG_KEY, ModelSpec

    record = _records(Path(directory)).get((model, tag))
    if record is None:
        return None
    with safe_open(str(Path(record["record_path"]).parent / record["weights"]), framework="pt") as weights:
        config = json.loads(weights.metadata()[CONFIG_KEY])
        parameters = sum(math.prod(weights.get_slice(key).get_shape()) for key in weights.keys())
    spec = ModelSpec.from_config(model, config)
    return render_card(facts_from_shipped_record(spec, record, repo_id=repo_id, parameters=parameters))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def shipped_weights(model: str, tag: str) -> Optional[Path]:
    """The verified weights file of a shipped checkpoint, or None when ``(model, tag)`` ships nothing.

    Raises:
        InputError: the file is missing or its sha256 differs from the record (a broken install or checkout;
            Git LFS pointers are a common cause); one line naming the file.
    """
    record = shipped_record(model, tag)
    if record is None:
        return None
    path = Path(record["record_path"]).parent / record["weights"]
    if not path.is_file():
        raise InputError(f"memclip's pretrained '{tag}' weights for {model} are missing: {path}")
    digest = file_sha256(path)
    if digest != record["sha256"]:
        raise InputError(f"memclip's pretrained '{tag}' weights for {model} are corrupt: sha256 {digest} of {path} "
                         f"differs from the recorded {record['sha256']}; reinstall memclip or re-create them")
    return path


def write_shipped(model: nn.Module, directory: Path, model_name: str, tag: str, record: Dict[str, Any],
                  dtype: torch.dtype = torch.float16) -> Path:
    """Write ``model``'s weights as ``<model_name>-<tag>.safetensors`` in ``dtype`` (with its memclip config in the
    metadata), the record ``<model_name>-<tag>.json`` beside them (``record`` plus the sha256, size and dtype) and
    the model card ``<model_name>-<tag>.md`` made from it; each atomically. Returns the weights file.

    ``memclip.create_model(model_name, pretrained=tag)`` finds them once they sit in :data:`PRETRAINED_DIR`.
    """
    from safetensors.torch import save_file

    from .atomic_io import atomic_write, atomic_write_json, atomic_write_text
    from .registry import CONFIG_KEY

    spec = getattr(model, "memclip_spec", None)
    if spec is None:
        raise InputError("write_shipped: the model carries no memclip_spec (build it with memclip.create_model)")
    directory = Path(directory)
    stem = f"{model_name}-{tag}"
    weights = directory / f"{stem}.safetensors"
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    metadata = {CONFIG_KEY: json.dumps(spec.to_config())}
    atomic_write(weights, lambda tmp: save_file(state, tmp, metadata=metadata))
    atomic_write_json(directory / f"{stem}.json", {
        **record, "model": model_name, "tag": tag, "weights": weights.name, "sha256": file_sha256(weights),
        "bytes": weights.stat().st_size, "dtype": str(dtype).replace("torch.", ""),
    })
    atomic_write_text(card_path(model_name, tag, directory), shipped_card(model_name, tag, directory=directory))
    return weights
