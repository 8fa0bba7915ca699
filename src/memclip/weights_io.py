"""Model weights in and out: ``save_pretrained`` (safetensors weights plus the full config, written atomically) and
``read_checkpoint`` (an open_clip tag, a weights file or a saved folder -> :class:`Checkpoint`, the weights and what
is known about them).

Only a model's weights: a run's training state (optimizer, schedule, progress, RNG) is saved and restored by
:mod:`memclip_train.checkpoints`, whose files this module also reads (their ``state_dict`` and recorded config).
"""
from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import open_clip
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_model
from torch import nn

from .atomic_io import atomic_write, atomic_write_json
from .errors import InputError
from .pretrained import list_shipped_tags, shipped_weights
from .rope_text import RopeTextTransformer
from .tulip_weights import TULIP_ACTIVATION, TULIP_PREFIX, tulip_text_state_dict
from .registry import CONFIG_KEY, SAVED_CONFIG_NAME, ModelSpec, is_saved_model_dir, read_saved_config
from .version import __version__

WEIGHTS_NAME = "open_clip_model.safetensors"
OPEN_CLIP_CONFIG_NAME = "open_clip_config.json"


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
    metadata = {CONFIG_KEY: json.dumps(spec.to_config())}
    atomic_write(directory / WEIGHTS_NAME,
                 lambda tmp: save_model(model, tmp, metadata=metadata, force_contiguous=True))
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
        InputError: keys are missing or unexpected, or shapes differ; the message lists them and names ``source``.
    """
    aliases = _alias_groups(model)
    expected = set(aliases)
    given = set(state_dict)
    missing = sorted(k for k in expected - given if not (aliases[k] & given))
    unexpected = sorted(given - expected)
    if missing or unexpected:
        raise InputError(
            f"checkpoint {source or '<state dict>'} does not match the model: "
            f"{len(missing)} missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
            f"{len(unexpected)} unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
        )
    model.load_state_dict(dict(state_dict), strict=False)


@dataclass
class Checkpoint:
    """Weights read from a tag, file or saved folder, with what is known about them.

    Attributes:
        path: the file the weights came from.
        state_dict: the weights (``module.`` prefixes removed).
        config: the memclip config recorded with the weights (saved folders, training checkpoints, safetensors
            metadata), or None for plain open_clip checkpoints.
        preprocess: preprocessing overrides that belong to the weights (a tag's mean/std, a saved folder's).
    """

    path: str
    state_dict: Dict[str, torch.Tensor]
    config: Optional[Dict[str, Any]] = None
    preprocess: Dict[str, Any] = field(default_factory=dict)


def _strip_module_prefix(state_dict: Dict[str, Any]) -> Dict[str, Any]:
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return state_dict


def _first_line(error: Exception) -> str:
    return next(iter(str(error).strip().splitlines()), type(error).__name__)


def read_weights_file(path: Union[str, Path], weights_only: bool = True) -> Checkpoint:
    """Read a .safetensors, .pt, .pth or .bin file: a bare state dict, or a dict with ``state_dict`` (training)."""
    path = str(path)
    try:
        if path.endswith(".safetensors"):
            with safe_open(path, framework="pt") as f:
                metadata = f.metadata() or {}
            config = json.loads(metadata[CONFIG_KEY]) if CONFIG_KEY in metadata else None
            return Checkpoint(path, load_file(path, device="cpu"), config)
        loaded = torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as error:
        raise InputError(
            f"{path} holds objects that torch.load's safe mode refuses ({_first_line(error)}); pass weights_only=False "
            "only if you trust the file"
        ) from error
    except Exception as error:  # truncated or damaged files fail in many ways inside torch.load and safetensors
        raise InputError(f"{path} is not a readable weights file ({type(error).__name__}: {_first_line(error)})"
                         ) from error
    if isinstance(loaded, torch.jit.ScriptModule):
        state_dict = {k: v for k, v in loaded.state_dict().items()
                      if k not in ("input_resolution", "context_length", "vocab_size")}
        return Checkpoint(path, state_dict)
    if not isinstance(loaded, dict):
        raise InputError(f"{path} is not a state dict or a checkpoint dict (got {type(loaded).__name__})")
    if "state_dict" in loaded:
        return Checkpoint(path, _strip_module_prefix(loaded["state_dict"]), loaded.get(CONFIG_KEY))
    return Checkpoint(path, _strip_module_prefix(loaded))


def names_a_path(pretrained: str) -> bool:
    """Whether a ``pretrained`` value is meant as a path (a tag such as 'openai' or 'synth' has no separator or
    weights suffix), so that a missing one is reported as a missing file rather than an unknown tag."""
    return os.path.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))


def read_checkpoint(
    pretrained: str, teacher: Optional[str], cache_dir: Optional[str] = None, weights_only: bool = True
) -> Checkpoint:
    """Resolve ``pretrained`` (saved folder, weights file, a tag of ``teacher`` that ships with memclip, or an
    open_clip tag of ``teacher``) and read it.

    Raises:
        FileNotFoundError: a path that does not exist.
        InputError: an unknown tag (the message lists the teacher's tags) or a failed download.
    """
    if is_saved_model_dir(pretrained):
        saved = read_saved_config(pretrained)
        checkpoint = read_weights_file(Path(pretrained) / WEIGHTS_NAME, weights_only)
        checkpoint.config = saved["model_cfg"]
        checkpoint.preprocess = saved.get("preprocess_cfg", {})
        return checkpoint
    if os.path.isfile(pretrained):
        return read_weights_file(pretrained, weights_only)
    shipped = shipped_weights(teacher, pretrained) if teacher else None
    if shipped is not None:
        return read_weights_file(shipped, weights_only)
    tag_cfg = open_clip.get_pretrained_cfg(teacher, pretrained) if teacher else {}
    if tag_cfg:
        try:
            path = open_clip.download_pretrained(tag_cfg, cache_dir=cache_dir)
        except Exception as error:  # network, hub or cache failures: say which weights and where
            raise InputError(
                f"could not download pretrained '{pretrained}' for '{teacher}': {error}. Offline? Pass a local "
                "checkpoint file or a saved memclip folder instead."
            ) from error
        checkpoint = read_weights_file(path, weights_only)
        checkpoint.preprocess = tag_cfg
        return checkpoint
    if os.path.isdir(pretrained):
        raise FileNotFoundError(f"{pretrained} is a folder without {SAVED_CONFIG_NAME}: not a saved memclip model")
    if names_a_path(pretrained):
        raise FileNotFoundError(f"pretrained checkpoint not found: {pretrained}")
    known = (list_shipped_tags(teacher) + open_clip.list_pretrained_tags_by_model(teacher)) if teacher else []
    raise InputError(
        f"pretrained '{pretrained}' is neither a file, a saved memclip folder, nor an open_clip tag of the teacher "
        f"'{teacher}' (known tags: {known})"
    )


def load_text_tower(model: nn.Module, source: str, weights_only: bool = True) -> None:
    """Replace ``model.text``'s weights with the ``text.*`` weights of a checkpoint or saved folder (strict), or,
    for ``tulip:PATH``, with the text tower of a checkpoint in TULIP's format (:mod:`memclip.tulip_weights`).

    Raises:
        InputError: the source has no separate text tower, or its tower does not match the model's.
    """
    if getattr(model, "text", None) is None:
        raise InputError("the model has no separate text tower (model.text) to load weights into")
    if source.startswith(TULIP_PREFIX):
        _load_tulip_text_tower(model, source[len(TULIP_PREFIX):], weights_only)
        return
    if is_saved_model_dir(source):
        checkpoint = read_weights_file(Path(source) / WEIGHTS_NAME, weights_only)
    elif os.path.isfile(source):
        checkpoint = read_weights_file(source, weights_only)
    else:
        raise FileNotFoundError(f"text tower checkpoint not found: {source}")
    text_state = {k[len("text."):]: v for k, v in checkpoint.state_dict.items() if k.startswith("text.")}
    if not text_state:
        raise InputError(f"{source} has no text.* weights: was it trained with a separate (e.g. RoPE) text tower?")
    load_model_state_dict(model.text, text_state, source=f"{source} (text tower)")


def _load_tulip_text_tower(model: nn.Module, path: str, weights_only: bool) -> None:
    """TULIP's text tower into the model's RoPE tower (which must use GELU, as TULIP's does)."""
    text = model.text
    if not isinstance(text, RopeTextTransformer) or text.activation != TULIP_ACTIVATION:
        raise InputError(f"tulip:{path}: TULIP's text tower loads into a RoPE tower with GELU blocks "
                         "(text_tower={'kind': 'rope', 'activation': 'gelu'}; memclip.create_model sets it for you)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"TULIP text-tower checkpoint not found: {path}")
    checkpoint = read_weights_file(path, weights_only)
    try:
        state = tulip_text_state_dict(checkpoint.state_dict, text.heads)
    except KeyError as error:
        raise InputError(f"tulip:{path}: {error.args[0]}; is it TULIP's checkpoint?") from error
    own = text.state_dict()
    wrong = next((k for k, v in state.items() if k in own and v.shape != own[k].shape), None)
    if wrong is not None:
        raise InputError(f"tulip:{path}: {wrong} is {tuple(state[wrong].shape)} there and {tuple(own[wrong].shape)} "
                         "in the model: a TULIP tower of another size (it must match the model's text tower, e.g. "
                         "TULIP's ViT-B/16 tower for ViT-B-16-mem)")
    load_model_state_dict(text, state, source=f"{path} (TULIP text tower)")
