"""Model weights in and out: ``save_pretrained`` (safetensors weights plus the full config, written atomically) and
``read_checkpoint`` (an open_clip tag, a weights file or a saved folder -> :class:`Checkpoint`, the weights and what
is known about them).

Only a model's weights: a run's training state (optimizer, schedule, progress, RNG) is saved and restored by
:mod:`memclip_train.checkpoints`, whose files this module also reads (their ``state_dict`` and recorded config).
"""
from __future__ import annotations

import copy
import json
import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import open_clip
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_model
from torch import nn

from .atomic_io import atomic_write, atomic_write_json
from .errors import InputError
from .model_files import OPEN_CLIP_CONFIG_NAME, WEIGHTS_NAME
from .pretrained import list_pretrained_tags_by_model, shipped_weights
from .rope_text import RopeTextTransformer
from .tulip_weights import TULIP_ACTIVATION, TULIP_PREFIX, tulip_text_state_dict
from .registry import CONFIG_KEY, SAVED_CONFIG_NAME, ModelSpec, is_saved_model_dir, read_saved_config
from .provenance import git_commit
from .version import __version__

logger = logging.getLogger(__name__)


def open_clip_config(model: nn.Module, spec: ModelSpec) -> Tuple[Optional[Dict[str, Any]], str]:
    """(the model config plain open_clip rebuilds ``model`` from, '') when open_clip reproduces it exactly, else
    (None, why not).

    open_clip builds neither memory, a convolutional stem, widened MLPs nor a RoPE text tower; a CLIP text tower
    stretched to N tokens is, once stretched, an open_clip tower of N positions (the config says N). The claim is
    then checked: open_clip's model of that config, built on the meta device, must have exactly ``model``'s
    tensors and shapes (HF and timm towers, which memclip does not change, are not built).
    """
    if spec.memory is not None:
        return None, "it has memory layers"
    if not spec.stem.is_default:
        return None, f"its vision tower has a {spec.stem.kind} stem"
    if not spec.wide_mlp.is_default:
        return None, "it has widened MLPs"
    if spec.text.kind != "clip":
        return None, f"its text tower is {spec.text.kind}"
    model_cfg = copy.deepcopy(spec.model_cfg)
    model_cfg.setdefault("text_cfg", {})["context_length"] = spec.context_length
    if "hf_model_name" in model_cfg["text_cfg"] or "timm_model_name" in model_cfg.get("vision_cfg", {}):
        return model_cfg, ""
    cfg = copy.deepcopy(model_cfg)
    custom_text = cfg.pop("custom_text", False)
    model_class = open_clip.CoCa if "multimodal_cfg" in cfg else open_clip.CustomTextCLIP if custom_text else \
        open_clip.CLIP
    try:
        with torch.device("meta"):
            plain = model_class(**cfg).state_dict()
    except Exception as error:  # a config open_clip cannot build at all
        return None, f"open_clip cannot build its config ({type(error).__name__}: {error})"
    own = model.state_dict()
    differ = sorted(set(own) ^ set(plain)) or [k for k in own if tuple(own[k].shape) != tuple(plain[k].shape)]
    if differ:
        return None, f"open_clip's model of its config differs in {len(differ)} tensors, e.g. {differ[0]}"
    return model_cfg, ""


def save_pretrained(model: nn.Module, directory: Union[str, Path], spec: Optional[ModelSpec] = None) -> Path:
    """Write ``model`` to ``directory`` as ``open_clip_model.safetensors`` plus ``memclip_config.json``.

    ``memclip.create_model(directory)`` (or ``create_model(name, pretrained=directory)``) loads it back with a
    strict key check. A model that plain open_clip reproduces exactly (no memory, open_clip's patchify stem, a CLIP
    text tower of any context, no widened MLPs; see :func:`open_clip_config`) also gets ``open_clip_config.json``,
    so ``open_clip.create_model('local-dir:DIR')`` reads the folder and gives the same embeddings; for any other
    model the file is not written (and an old one in the folder is removed), so open_clip refuses the folder
    rather than load another model.

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
        raise InputError("save_pretrained: the model carries no memclip_spec; pass spec= (see memclip.get_model_spec)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(model))
    metadata = {CONFIG_KEY: json.dumps(spec.to_config())}
    atomic_write(directory / WEIGHTS_NAME,
                 lambda tmp: save_model(model, tmp, metadata=metadata, force_contiguous=True))
    plain_cfg, why_not = open_clip_config(model, spec)
    if plain_cfg is not None:
        atomic_write_json(directory / OPEN_CLIP_CONFIG_NAME, {"model_cfg": plain_cfg, "preprocess_cfg": preprocess_cfg})
    else:
        logger.info("%s: no %s, plain open_clip cannot rebuild the model (%s); memclip.create_model reads it",
                    directory, OPEN_CLIP_CONFIG_NAME, why_not)
        (directory / OPEN_CLIP_CONFIG_NAME).unlink(missing_ok=True)
    atomic_write_json(directory / SAVED_CONFIG_NAME, {
        "name": spec.name,
        "model_cfg": spec.to_config(),
        "preprocess_cfg": preprocess_cfg,
        "memclip_version": __version__,
        "memclip_git_commit": git_commit(),
    })
    return directory


def _alias_groups(model: nn.Module) -> Dict[str, set]:
    """For each state-dict key, the keys that name the same tensor (shared value tables appear under several)."""
    by_tensor: Dict[int, set] = {}
    own = model.state_dict(keep_vars=True)
    for key, tensor in own.items():
        by_tensor.setdefault(id(tensor), set()).add(key)
    return {key: by_tensor[id(tensor)] for key, tensor in own.items()}


def tensor_problems(model: nn.Module, state_dict: Mapping[str, Any]) -> List[str]:
    """What keeps the tensors of ``state_dict`` that the model has from loading into it as they are: a value that is
    not a tensor, a shape that differs, or a dtype that cannot hold the parameter (integers or booleans for a floating
    point weight, which ``load_state_dict`` would silently cast: int8 weights become whole numbers, usually zeros;
    floating point values for an integer buffer). Any floating point dtype may hold a floating point weight (weights
    ship in fp16). One line per tensor, naming it."""
    own = model.state_dict()
    problems = []
    for key, value in state_dict.items():
        if key not in own:
            continue
        target = own[key]
        if not isinstance(value, torch.Tensor):
            problems.append(f"{key} is a {type(value).__name__}, not a tensor")
        elif tuple(value.shape) != tuple(target.shape):
            problems.append(f"{key} has shape {tuple(value.shape)}, the model's {tuple(target.shape)}")
        elif target.is_floating_point() and not (value.is_floating_point() or value.is_complex()):
            problems.append(f"{key} is {str(value.dtype).replace('torch.', '')}, which cannot hold the model's "
                            f"{str(target.dtype).replace('torch.', '')} weights")
        elif not target.is_floating_point() and not target.is_complex() and value.is_floating_point():
            problems.append(f"{key} is {str(value.dtype).replace('torch.', '')}, the model's buffer "
                            f"{str(target.dtype).replace('torch.', '')}")
    return problems


def _refuse_tensor_problems(model: nn.Module, state_dict: Mapping[str, Any], source: str) -> None:
    problems = tensor_problems(model, state_dict)
    if problems:
        raise InputError(f"checkpoint {source or '<state dict>'} does not fit the model: {len(problems)} tensors "
                         f"cannot load as they are: {'; '.join(problems[:4])}{' ...' if len(problems) > 4 else ''}")


def load_model_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "") -> None:
    """Strict load that accepts a shared tensor stored under only one of its names.

    Raises:
        InputError: keys are missing or unexpected, shapes differ, or a tensor's dtype cannot hold its parameter
            (see :func:`tensor_problems`); the message lists them and names ``source``.
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
    _refuse_tensor_problems(model, state_dict, source)
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
    """Read a .safetensors, .pt, .pth or .bin file: a bare state dict, or a dict with ``state_dict`` (training).

    Pickle files are read only in ``torch.load``'s safe mode: ``weights_only`` is open_clip's argument, and
    ``False`` is refused (a pickle can run code when it is loaded; convert such a file once, in a process you trust:
    load it with torch.load's safe mode switched off and ``torch.save`` only its ``state_dict``).

    Raises:
        InputError: ``weights_only`` is False, or the file is damaged, refused by the safe mode or not weights.
    """
    path = str(path)
    if not weights_only:
        raise InputError(f"{path}: memclip reads weights only with torch.load(weights_only=True); a file that needs "
                         "weights_only=False can run code when loaded: convert it once where you trust it")
    try:
        if path.endswith(".safetensors"):
            with safe_open(path, framework="pt") as f:
                metadata = f.metadata() or {}
            config = json.loads(metadata[CONFIG_KEY]) if CONFIG_KEY in metadata else None
            return Checkpoint(path, load_file(path, device="cpu"), config)
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise InputError(
            f"{path} holds objects that torch.load's safe mode refuses ({_first_line(error)}); if you trust the file, "
            "keep only its tensors, in a process you trust: load it with torch.load's safe mode switched off and "
            "torch.save only its state_dict"
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
        if not isinstance(loaded["state_dict"], dict):
            raise InputError(f"{path}: its 'state_dict' is a {type(loaded['state_dict']).__name__}, not a dict of "
                             "tensors")
        config = loaded.get(CONFIG_KEY)
        if config is not None and not isinstance(config, dict):
            raise InputError(f"{path}: its '{CONFIG_KEY}' is a {type(config).__name__}, not a model config")
        return Checkpoint(path, _strip_module_prefix(loaded["state_dict"]), config)
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
    known = list_pretrained_tags_by_model(teacher) if teacher else []
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
