"""Saving and loading memclip models: safetensors weights plus the full config, written atomically."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import open_clip
import torch
from safetensors.torch import save_model
from torch import nn

from .registry import SAVED_CONFIG_NAME, ModelSpec
from .version import __version__

WEIGHTS_NAME = "open_clip_model.safetensors"
OPEN_CLIP_CONFIG_NAME = "open_clip_config.json"


def atomic_write_bytes(path: Union[str, Path], write: Any) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    A reader never sees a half-written file: a crash leaves the old file (or none) and a stray ``.tmp`` file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Union[str, Path], data: Any) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")

    atomic_write_bytes(path, write)


def save_pretrained(model: nn.Module, directory: Union[str, Path], spec: Optional[ModelSpec] = None) -> Path:
    """Write ``model`` to ``directory`` as ``open_clip_model.safetensors`` plus ``memclip_config.json``.

    ``memclip.create_model(directory)`` (or ``create_model(name, pretrained=directory)``) loads it back with a
    strict key check. A model without memory also gets ``open_clip_config.json``, so plain open_clip reads the
    folder with ``open_clip.create_model('local-dir:DIR')``.

    Args:
        model: a model made by :func:`memclip.create_model` (it carries ``memclip_spec``), or any open_clip model
            together with ``spec``.
        directory: the output folder (created if missing).
        spec: the model's spec, when the model does not carry one.
    Returns:
        The folder.
    """
    model = getattr(model, "module", model)
    spec = spec or getattr(model, "memclip_spec", None)
    if spec is None:
        raise ValueError("save_pretrained: the model carries no memclip_spec; pass spec= (see memclip.get_model_spec)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(model))
    atomic_write_bytes(directory / WEIGHTS_NAME, lambda tmp: save_model(model, tmp, force_contiguous=True))
    if spec.memory is None:
        atomic_write_json(directory / OPEN_CLIP_CONFIG_NAME,
                          {"model_cfg": spec.model_cfg, "preprocess_cfg": preprocess_cfg})
    atomic_write_json(directory / SAVED_CONFIG_NAME, {
        "name": spec.name,
        "model_cfg": spec.to_config(),
        "preprocess_cfg": preprocess_cfg,
        "memclip_version": __version__,
    })
    return directory


def _alias_groups(model: nn.Module) -> Dict[str, set]:
    """For each state-dict key, the keys that name the same tensor (shared value tables appear under several)."""
    by_tensor: Dict[int, set] = {}
    own = model.state_dict(keep_vars=True)
    for key, tensor in own.items():
        by_tensor.setdefault(id(tensor), set()).add(key)
    return {key: by_tensor[id(tensor)] for key, tensor in own.items()}


def load_model_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "") -> None:
    """Strict load that accepts a shared tensor stored under only one of its names.

    Raises:
        RuntimeError: keys are missing or unexpected, or shapes differ; the message lists them and names ``source``.
    """
    aliases = _alias_groups(model)
    expected = set(aliases)
    given = set(state_dict)
    missing = sorted(k for k in expected - given if not (aliases[k] & given))
    unexpected = sorted(given - expected)
    if missing or unexpected:
        raise RuntimeError(
            f"checkpoint {source or '<state dict>'} does not match the model: "
            f"{len(missing)} missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
            f"{len(unexpected)} unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
        )
    model.load_state_dict(dict(state_dict), strict=False)
