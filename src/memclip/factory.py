"""memclip's factory: open_clip's API (`create_model`, `create_model_and_transforms`, `get_tokenizer`) for memory
models.

Models without memory that open_clip knows pass straight to open_clip. For a memory model (or one of memclip's own
architectures, or one with a long-context text tower) the factory:

1. builds the teacher architecture with open_clip's model classes;
2. gives the vision tower its stem (a convolutional stem where the config asks for one), then loads ``pretrained``
   when it holds teacher weights (an open_clip tag of the teacher, an open_clip checkpoint, or a Long-CLIP
   checkpoint, whose 248-token context the model then takes);
3. gives the text tower its context (Long-CLIP stretch) or its RoPE positions;
4. widens the MLPs of the listed vision blocks (the dense control, :mod:`memclip.wide_mlp`), then swaps memory
   layers into the listed vision blocks;
5. loads the finished model's weights when ``pretrained`` is a saved memclip model or a training checkpoint.

Which of these steps loads the weights, and which spec and text tower the model is built with, is decided once by
:func:`plan_load` (a pure function of the spec and the checkpoint); :func:`_build_memclip_model` carries it out.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import open_clip
import torch
from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed
from open_clip.transform import AugmentationCfg, PreprocessCfg, image_transform_v2, merge_preprocess_dict
from torch import nn

from memory_layers import MemoryConfig, ProductKeyMemory

from . import hub
from .clip_model import CLIP
from .errors import InputError
from .longclip_weights import from_longclip_state_dict, is_longclip_state_dict
from .names_text import NameTokenizer, install_name_table
from .position_stretch import stretch_text_positions
from .precision import PRECISIONS
from .registry import ModelSpec, get_model_spec, is_saved_model_dir, list_memclip_models
from .rope_text import convert_to_rope_text
from .stem import attach_stem
from .surgery import attach_memory
from .text_tower import TextTowerConfig
from .tulip_weights import TULIP_ACTIVATION, TULIP_CONTEXT_LENGTH, TULIP_PREFIX
from .weights_io import Checkpoint, load_model_state_dict, load_text_tower, read_checkpoint, tensor_problems
from .wide_mlp import widen_mlps

logger = logging.getLogger(__name__)


def _resolve_memory(spec: ModelSpec, memory: Union[None, MemoryConfig, Mapping[str, Any]]) -> ModelSpec:
    """Apply a ``memory`` argument: a MemoryConfig replaces the spec's; a dict overrides some of its fields."""
    if memory is None:
        return spec
    if isinstance(memory, MemoryConfig):
        return spec.with_memory(memory)
    if not isinstance(memory, Mapping):
        raise TypeError(f"memory must be a MemoryConfig or a dict of overrides, got {type(memory).__name__}")
    return spec.with_memory(MemoryConfig.with_overrides(spec.memory, memory))


def _resolve_text(spec: ModelSpec, text_tower: Union[None, str, TextTowerConfig, Mapping[str, Any]]) -> ModelSpec:
    """Apply a ``text_tower`` argument: a config, a kind name ('clip'/'rope'), or a dict of field overrides."""
    if text_tower is None:
        return spec
    if isinstance(text_tower, TextTowerConfig):
        return spec.replace(text=text_tower)
    if isinstance(text_tower, str):
        return spec.replace(text=spec.text.replace(kind=text_tower))
    if not isinstance(text_tower, Mapping):
        raise TypeError(f"text_tower must be a TextTowerConfig, a kind name or a dict, got {type(text_tower).__name__}")
    return spec.replace(text=TextTowerConfig.from_dict({**spec.text.to_dict(), **dict(text_tower)}))


def _force(model_cfg: Dict[str, Any], quick_gelu: bool, patch_dropout: Optional[float],
           image_size: Optional[Union[int, Tuple[int, int]]], context_length: Optional[int],
           custom_text: bool = False) -> Dict[str, Any]:
    """Apply open_clip's ``force_*`` overrides to a copy of the config."""
    model_cfg = copy.deepcopy(model_cfg)
    if quick_gelu:
        model_cfg["quick_gelu"] = True
    if custom_text:
        model_cfg["custom_text"] = True
    if patch_dropout is not None:
        model_cfg["vision_cfg"]["patch_dropout"] = patch_dropout
    if image_size is not None:
        model_cfg["vision_cfg"]["image_size"] = image_size
    if context_length is not None:
        model_cfg["text_cfg"]["context_length"] = context_length
    return model_cfg


def _instantiate(model_cfg: Dict[str, Any], precision: str) -> nn.Module:
    """Build an open_clip model from a config dict, as open_clip's factory does, with random weights."""
    cfg = copy.deepcopy(model_cfg)
    custom_text = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
    if "hf_model_name" in cfg.get("text_cfg", {}):
        cfg["text_cfg"]["hf_model_pretrained"] = False
    if "timm_model_name" in cfg.get("vision_cfg", {}):
        cfg["vision_cfg"]["timm_model_pretrained"] = False
    if "multimodal_cfg" in cfg:
        model_class = open_clip.CoCa
    else:
        model_class = open_clip.CustomTextCLIP if custom_text else CLIP
    return model_class(**cfg, cast_dtype=open_clip.get_cast_dtype(precision))


def _change_text_tower(model: nn.Module, current: TextTowerConfig, target: TextTowerConfig, native: int) -> None:
    """Turn the model's text tower from ``current`` into ``target`` in place (weights loaded or not).

    Supported: a longer context for an absolute-position tower (stretch), CLIP -> RoPE, a new context or NTK
    factor for a RoPE tower, and CLIP -> fixed names.
    Raises:
        ValueError: a change that would lose information (shorter context, RoPE -> absolute, another theta).
    """
    if target == current:
        return
    if "names" in (current.kind, target.kind):
        if current.kind != "clip" or target.kind != "names":
            raise InputError(f"cannot turn a {current.kind} text tower into a {target.kind} one (only a clip tower "
                             "becomes a names tower)")
        if not isinstance(model, CLIP):
            raise InputError(f"a names text tower replaces the text of memclip's CLIP, not of {type(model).__name__}")
        install_name_table(model, target.names, target.names_seed)
        return
    current_length = current.resolved_context_length(native)
    target_length = target.resolved_context_length(native)
    if target.kind == "rope":
        if current.kind == "rope" and target.rope_theta != current.rope_theta:
            raise InputError(f"cannot change rope_theta from {current.rope_theta} to {target.rope_theta} after "
                             "training")
        convert_to_rope_text(model, target_length, theta=target.rope_theta, ntk_factor=target.rope_ntk_factor,
                             activation=target.activation)
        return
    if current.kind == "rope":
        raise InputError("cannot turn a RoPE text tower back into absolute positions (text_tower kind 'clip')")
    if target_length < current_length:
        raise InputError(f"cannot shorten the text context from {current_length} to {target_length} tokens")
    if target_length > current_length:
        if target.pos_stretch is None:
            raise InputError(
                f"TextTowerConfig.context_length={target_length} exceeds the tower's {current_length} tokens: set "
                "pos_stretch='longclip' (or 'interpolate') to stretch the positional embedding"
            )
        stretch_text_positions(model, target_length, method=target.pos_stretch, keep=target.stretch_keep)


def _in_model_layout(state_dict: Dict[str, Any], model: nn.Module) -> Dict[str, Any]:
    """CLIP-layout text keys -> CustomTextCLIP's ``text.*`` layout when the model has a separate text tower."""
    if "positional_embedding" in state_dict and not hasattr(model, "positional_embedding"):
        return convert_to_custom_text_state_dict(dict(state_dict))
    return state_dict


def _holds_keys_beyond_architecture(spec: ModelSpec, state_dict: Dict[str, Any]) -> bool:
    """Whether ``state_dict`` holds keys that ``spec``'s architecture, before any memclip change, lacks (memory keys:
    the weights of a finished student). The architecture is built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        bare = _instantiate(dict(spec.model_cfg, custom_text=True) if spec.text.kind == "rope" else spec.model_cfg,
                            "fp32")
        attach_stem(bare.visual, spec.stem)
    return bool(set(_in_model_layout(state_dict, bare)) - set(bare.state_dict()))


_ARCHITECTURE_KEYS = {
    "vision_cfg": {"layers": 12, "width": 768, "head_width": 64, "mlp_ratio": 4.0, "patch_size": 16,
                   "timm_model_name": None},
    "text_cfg": {"layers": 12, "width": 512, "heads": 8, "mlp_ratio": 4.0, "vocab_size": 49408,
                 "hf_model_name": None},
}
"""The config keys that fix an architecture (with open_clip's defaults): weights of another value are of another
model. Image size and context length are left out: a checkpoint may have resized its position tables."""


def architecture_differences(asked: ModelSpec, recorded: ModelSpec) -> list:
    """The differences between two specs' architectures (``embed_dim``, :data:`_ARCHITECTURE_KEYS`, the stem kind),
    as ``"vision_cfg.width 128, not 768"`` strings (``recorded``'s value first); empty when they agree."""
    differences = []
    if asked.model_cfg.get("embed_dim") != recorded.model_cfg.get("embed_dim"):
        differences.append(f"embed_dim {recorded.model_cfg.get('embed_dim')}, not {asked.model_cfg.get('embed_dim')}")
    for tower, defaults in _ARCHITECTURE_KEYS.items():
        mine, theirs = asked.model_cfg.get(tower) or {}, recorded.model_cfg.get(tower) or {}
        for key, default in defaults.items():
            if mine.get(key, default) != theirs.get(key, default):
                differences.append(f"{tower}.{key} {theirs.get(key, default)}, not {mine.get(key, default)}")
    if asked.stem.kind != recorded.stem.kind:
        differences.append(f"a {recorded.stem.kind} stem, not a {asked.stem.kind} stem")
    return differences


def _refuse_other_architecture(spec: ModelSpec, recorded: ModelSpec, checkpoint: Checkpoint) -> None:
    """Weights recorded with another architecture than the model asked for would build the recorded one under the
    asked name (a ViT-Tiny-8 labelled ViT-B-16): an error naming both.

    Raises:
        InputError: the architectures differ.
    """
    differences = architecture_differences(spec, recorded)
    if differences:
        shown = "; ".join(differences[:4]) + (" ..." if len(differences) > 4 else "")
        raise InputError(
            f"model '{spec.name}' was asked for with pretrained {checkpoint.path}, whose weights are of another "
            f"architecture ('{recorded.teacher}'): {shown}. Ask for '{recorded.teacher}' (or pass the saved folder "
            "itself as the model)")


@dataclass(frozen=True)
class LoadPlan:
    """How ``pretrained`` goes into the model :func:`create_model` builds, decided once by :func:`plan_load`.

    Attributes:
        spec: the spec to build, before the caller's ``memory``/``text_tower`` overrides (a checkpoint's recorded
            config where the weights are loaded after its changes; a Long-CLIP context length).
        stage: None (random weights), or when the weights are loaded: ``open_clip`` (teacher weights in open_clip's
            layout, before any change), ``teacher`` (teacher weights recorded by memclip, after the text change,
            before the memory or widening) or ``final`` (weights of the finished model, after every change).
        checkpoint: the weights (a Long-CLIP state dict already in open_clip's keys), or None.
        loaded_text: the text tower the weights were saved with; the model takes it before loading them.
        longclip: the weights are Long-CLIP's.
    """

    spec: ModelSpec
    stage: Optional[str] = None
    checkpoint: Optional[Checkpoint] = None
    loaded_text: TextTowerConfig = TextTowerConfig()
    longclip: bool = False


def plan_load(spec: ModelSpec, checkpoint: Optional[Checkpoint]) -> LoadPlan:
    """Decide how ``checkpoint`` loads into a model of ``spec``: which spec to build, at which stage the weights go
    in, and with which text tower. Changes neither argument.

    A checkpoint with a recorded config is loaded at ``teacher`` when ``spec`` grows it (adds memory or widens its
    MLPs: a teacher's weights for a student), else at ``final`` with the recorded config adopted. One without a
    config is loaded at ``open_clip``, unless it holds keys the bare architecture lacks (a student saved as a plain
    state dict): then at ``final``.

    Raises:
        InputError: the checkpoint records another architecture than ``spec``'s (see :func:`architecture_differences`).
    """
    if checkpoint is None:
        return LoadPlan(spec)
    if is_longclip_state_dict(checkpoint.state_dict):
        state_dict, length = from_longclip_state_dict(checkpoint.state_dict)
        logger.info("%s holds Long-CLIP weights: one %d-row position table (Long-CLIP's masks), a %d-token "
                    "context", checkpoint.path, length, length)
        if not spec.model_cfg.get("quick_gelu", False):
            logger.warning("Long-CLIP's weights are OpenAI CLIP's, trained with QuickGELU, but %s builds GELU: use "
                           "the -quickgelu config (ViT-B-16-quickgelu, ViT-L-14-quickgelu)", spec.name)
        spec = spec.replace(model_cfg=_force(spec.model_cfg, False, None, None, length))
        return LoadPlan(spec, "open_clip", dataclasses.replace(checkpoint, state_dict=state_dict), longclip=True)
    if checkpoint.config is None:
        stage = "final" if _holds_keys_beyond_architecture(spec, checkpoint.state_dict) else "open_clip"
        return LoadPlan(spec, stage, checkpoint)
    try:
        recorded = ModelSpec.from_config(spec.name, checkpoint.config)
    except (ValueError, TypeError, KeyError) as error:
        raise InputError(f"{checkpoint.path}: its recorded model config is invalid ({error})") from error
    _refuse_other_architecture(spec, recorded, checkpoint)
    grows = ((spec.has_memory and not recorded.has_memory)
             or (not spec.wide_mlp.is_default and recorded.wide_mlp.is_default))
    if grows:
        return LoadPlan(spec.replace(model_cfg=recorded.model_cfg, text=recorded.text, stem=recorded.stem),
                        "teacher", checkpoint, recorded.text)
    if recorded.to_config() != spec.to_config():
        logger.info("using the model config recorded in %s", checkpoint.path)
    return LoadPlan(recorded, "final", checkpoint, recorded.text)


def _load_planned_weights(model: nn.Module, plan: LoadPlan, stage: str, weights_only: bool) -> None:
    """Load the plan's weights into ``model`` when ``stage`` is the plan's (the model as it stands at ``stage``)."""
    if plan.stage != stage:
        return
    checkpoint = plan.checkpoint
    if stage == "open_clip" and not plan.longclip:
        logger.info("loading teacher weights for %s from %s", plan.spec.name, checkpoint.path)
        problems = [p for p in tensor_problems(model, checkpoint.state_dict) if "shape" not in p]  # open_clip resizes
        if problems:
            raise InputError(f"checkpoint {checkpoint.path} does not fit {plan.spec.name}: {'; '.join(problems[:4])}")
        try:
            open_clip.load_checkpoint(model, checkpoint.path, strict=True, weights_only=True)
        except RuntimeError as error:  # missing, unexpected or reshaped tensors
            raise InputError(f"checkpoint {checkpoint.path} does not fit {plan.spec.name}: "
                             f"{' '.join(str(error).split())[:1500]}") from error
        return
    logger.info("loading %s weights for %s from %s", "Long-CLIP" if plan.longclip else stage, plan.spec.name,
                checkpoint.path)
    state = _in_model_layout(checkpoint.state_dict, model)
    if stage != "open_clip":
        resize_pos_embed(state, model)
    load_model_state_dict(model, state, source=checkpoint.path)


def _build_memclip_model(spec: ModelSpec, plan: LoadPlan, precision: str, weights_only: bool) -> nn.Module:
    """The model of ``spec`` with the plan's weights, before device and precision: the architecture, its stem, the
    text tower the weights were saved with, widened MLPs and memory, then the text tower ``spec`` asks for."""
    native = spec.model_cfg["text_cfg"].get("context_length", 77)
    separate_text = "rope" in (spec.text.kind, plan.loaded_text.kind)
    model = _instantiate(dict(spec.model_cfg, custom_text=True) if separate_text else spec.model_cfg, precision)
    attach_stem(model.visual, spec.stem)
    _load_planned_weights(model, plan, "open_clip", weights_only)
    _change_text_tower(model, TextTowerConfig(), plan.loaded_text, native)
    _load_planned_weights(model, plan, "teacher", weights_only)
    widen_mlps(model, spec.wide_mlp)
    if spec.memory is not None:
        attach_memory(model, spec.memory)
    _load_planned_weights(model, plan, "final", weights_only)
    _change_text_tower(model, plan.loaded_text, spec.text, native)
    return model


def _tulip_text_tower(text_tower: Union[None, str, TextTowerConfig, Mapping[str, Any]]
                      ) -> Union[TextTowerConfig, Dict[str, Any]]:
    """The ``text_tower`` argument for ``text_pretrained="tulip:PATH"``: a RoPE tower with TULIP's GELU blocks, at
    TULIP's 248 tokens unless another context length is given.

    Raises:
        ValueError: ``text_tower`` asks for another kind of tower or another activation.
    """
    if isinstance(text_tower, TextTowerConfig):
        if text_tower.kind != "rope" or text_tower.activation != TULIP_ACTIVATION:
            raise InputError("text_pretrained='tulip:...' needs text_tower kind 'rope' with activation 'gelu'")
        return text_tower
    overrides = {"kind": text_tower} if isinstance(text_tower, str) else dict(text_tower or {})
    for key, value in (("kind", "rope"), ("activation", TULIP_ACTIVATION)):
        if overrides.setdefault(key, value) != value:
            raise InputError(f"text_pretrained='tulip:...' needs text_tower {key} {value!r}, got {overrides[key]!r}")
    overrides.setdefault("context_length", TULIP_CONTEXT_LENGTH)
    return overrides


def _needs_memclip(spec: ModelSpec, memory: Union[None, MemoryConfig, Mapping[str, Any]],
                   text_tower: Union[None, str, TextTowerConfig, Mapping[str, Any]], checkpoint: Optional[Checkpoint],
                   memclip_name: bool) -> bool:
    """Whether memclip builds the model (else open_clip does): a memclip name or saved folder, a checkpoint that
    records a memclip config or holds Long-CLIP weights, or a spec that, with the overrides, has memory, a changed
    text tower, a stem or widened MLPs."""
    if memclip_name or (checkpoint is not None and (checkpoint.config is not None
                                                     or is_longclip_state_dict(checkpoint.state_dict))):
        return True
    resolved = _resolve_text(_resolve_memory(spec, memory), text_tower)
    return (resolved.has_memory or not resolved.text.is_default or not resolved.stem.is_default
            or not resolved.wide_mlp.is_default)


def _set_device_and_precision(model: nn.Module, device: torch.device, precision: str) -> None:
    if precision in ("fp16", "bf16"):
        dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        model.to(device=device)
        open_clip.convert_weights_to_lp(model, dtype=dtype)
        for module in model.modules():
            if isinstance(module, ProductKeyMemory):
                module.to(dtype=dtype)
    elif precision in ("pure_fp16", "pure_bf16"):
        model.to(device=device, dtype=torch.float16 if precision == "pure_fp16" else torch.bfloat16)
    else:
        model.to(device=device)


OPEN_CLIP_NEUTRAL_ARGUMENTS: Dict[str, Callable[[Any], bool]] = {
    "jit": lambda value: not value,
    "pretrained_image": lambda value: not value,
    "pretrained_text": lambda value: True,
    "pretrained_hf": lambda value: True,
    "pretrained_image_path": lambda value: not value,
    "pretrained_text_path": lambda value: not value,
    "load_weights": lambda value: bool(value),
}
"""Arguments of ``open_clip.create_model`` that its callers pass with their defaults (open_clip_train's main passes
``jit`` and ``pretrained_image``), and which values leave a memclip model as memclip builds it. memclip builds no
base tower weights (``pretrained_text``), so any value of it is accepted."""

OPEN_CLIP_ONLY_REASONS = {
    "jit": "memory layers (custom autograd functions and Triton kernels) cannot be TorchScript-compiled; use "
           "torch.compile on the model instead",
    "pretrained_image": "it loads timm's ImageNet weights into a timm image tower; memclip's image towers take their "
                        "weights from `pretrained`",
    "pretrained_image_path": "load tower weights with `pretrained` (a checkpoint or saved folder)",
    "pretrained_text_path": "load text tower weights with text_pretrained= (a checkpoint or saved folder)",
    "load_weights": "pass pretrained=None for random weights",
}


def _refuse_open_clip_only_arguments(open_clip_kwargs: Mapping[str, Any], pretrained: Optional[str]) -> None:
    """Accept the open_clip arguments that leave a memclip model unchanged; refuse the others, each with its reason.

    Raises:
        ValueError: an open_clip argument whose value would change the model.
        TypeError: an argument memclip models do not take (e.g. model constructor keywords).
    """
    changing = {key: value for key, value in open_clip_kwargs.items()
                if key in OPEN_CLIP_NEUTRAL_ARGUMENTS and not OPEN_CLIP_NEUTRAL_ARGUMENTS[key](value)}
    if "load_weights" in changing and not pretrained:
        del changing["load_weights"]
    if changing:
        key, value = next(iter(changing.items()))
        raise InputError(f"create_model({key}={value!r}) is not supported for memclip models: "
                         f"{OPEN_CLIP_ONLY_REASONS[key]}")
    unknown = sorted(key for key in open_clip_kwargs if key not in OPEN_CLIP_NEUTRAL_ARGUMENTS)
    if unknown:
        raise TypeError(f"create_model got arguments only open_clip models take: {unknown}")


def create_model(
    model_name: str,
    pretrained: Optional[str] = None,
    precision: str = "fp32",
    device: Union[str, torch.device] = "cpu",
    *,
    memory: Union[None, MemoryConfig, Mapping[str, Any]] = None,
    text_tower: Union[None, str, TextTowerConfig, Mapping[str, Any]] = None,
    text_pretrained: Optional[str] = None,
    force_quick_gelu: bool = False,
    force_patch_dropout: Optional[float] = None,
    force_image_size: Optional[Union[int, Tuple[int, int]]] = None,
    force_context_length: Optional[int] = None,
    force_custom_text: bool = False,
    force_preprocess_cfg: Optional[Dict[str, Any]] = None,
    cache_dir: Optional[str] = None,
    output_dict: Optional[bool] = None,
    require_pretrained: bool = False,
    weights_only: bool = True,
    **open_clip_kwargs: Any,
) -> nn.Module:
    """Create a model by name, as ``open_clip.create_model`` does, with memory where the config asks for it.

    Args:
        model_name: a memclip config (``ViT-B-16-mem``, ``ViT-Tiny-8``), a saved memclip folder, any open_clip
            name (``ViT-B-32``), or ``hf-hub:ORG/REPO[@REVISION]`` / ``local-dir:DIR`` holding a memclip model
            (memclip builds it) or an open_clip one (open_clip builds it, unless ``memory`` or ``text_tower`` change
            it: then its weights are the teacher's). Hub repos are fetched into the Hub's cache (:mod:`memclip.hub`);
            as in open_clip, such names bring their own weights and ``pretrained`` is ignored.
        pretrained: an open_clip tag of the teacher (``openai``), a checkpoint file, a folder written by
            :func:`memclip.save_pretrained`, or an ``hf-hub:``/``local-dir:`` model. A checkpoint that records its
            memclip config (saved folders, training checkpoints) or holds memory keys is loaded into the finished
            model, and its recorded memory and text settings are used unless ``memory``/``text_tower`` say
            otherwise; any other checkpoint holds teacher weights and is loaded before the surgery. None: random
            weights.
        precision: fp32, fp16, bf16, pure_fp16, pure_bf16 (amp variants keep fp32 weights).
        device: where the model goes.
        memory: a :class:`MemoryConfig` replacing the config's memory block, or a dict of field overrides (which
            can also add memory to an architecture that has none).
        text_tower: a :class:`TextTowerConfig`, ``"clip"``/``"rope"``, or a dict of overrides, e.g.
            ``{"context_length": 248, "pos_stretch": "longclip"}``.
        text_pretrained: a checkpoint or saved folder whose ``text.*`` weights replace the text tower at the end
            (e.g. a RoPE tower distilled with ``--distill-text``), or ``tulip:PATH``: TULIP's released text encoder
            in its own checkpoint format (a RoPE tower with GELU blocks at 248 tokens unless ``text_tower`` gives
            another context length).
        force_*: as in open_clip.
        cache_dir: where Hub models and open_clip tags download (default: the Hub's cache).
        weights_only: ``torch.load``'s safe mode, as in open_clip; memclip reads weights only in it (``False`` is
            refused with an error, see :func:`memclip.weights_io.read_weights_file`).
        open_clip_kwargs: passed to ``open_clip.create_model`` for models that go straight to open_clip. A model
            memclip builds accepts those open_clip's callers pass with their defaults (``jit=False``,
            ``pretrained_image=False``, ...) and refuses, with the reason, a value that would change it.
    Returns:
        The model, with ``model.memclip_spec`` (a :class:`ModelSpec`) attached.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision={precision!r}: must be one of {PRECISIONS}")
    device = torch.device(device) if isinstance(device, str) else device
    source = hub.resolve(model_name, cache_dir, weights=True) if hub.has_schema(model_name) else None
    if source is not None and pretrained:
        logger.warning("ignoring pretrained=%r: '%s' names its own weights (as in open_clip)", pretrained, model_name)
        pretrained = None
    if source is not None and source.is_memclip:
        model_name = str(source.folder)
    pretrained = hub.local_weights(pretrained, cache_dir)
    text_pretrained = hub.local_weights(text_pretrained, cache_dir)
    if text_pretrained and text_pretrained.startswith(TULIP_PREFIX):
        text_tower = _tulip_text_tower(text_tower)
    saved_dir = is_saved_model_dir(model_name)
    spec = get_model_spec(model_name, cache_dir)
    if pretrained is None and saved_dir:
        pretrained = model_name
    elif pretrained is None and source is not None and _needs_memclip(spec, memory, text_tower, None, False):
        pretrained = str(source.weights)  # an open_clip Hub model that memclip changes: its weights are the teacher's
    checkpoint = None
    if pretrained:
        checkpoint = read_checkpoint(pretrained, spec.teacher, cache_dir=cache_dir, weights_only=weights_only)
    elif require_pretrained:
        raise RuntimeError(f"require_pretrained=True but no pretrained weights were given for '{model_name}'")
    forces = (force_quick_gelu, force_patch_dropout, force_image_size, force_context_length, force_custom_text)
    if not _needs_memclip(spec, memory, text_tower, checkpoint, saved_dir or model_name in list_memclip_models()):
        model = open_clip.create_model(
            source.open_clip_name if source is not None else model_name, pretrained=pretrained, precision=precision,
            device=device, force_quick_gelu=force_quick_gelu, force_patch_dropout=force_patch_dropout,
            force_image_size=force_image_size, force_context_length=force_context_length,
            force_custom_text=force_custom_text, force_preprocess_cfg=force_preprocess_cfg, cache_dir=cache_dir,
            output_dict=output_dict, require_pretrained=require_pretrained, weights_only=weights_only,
            **open_clip_kwargs,
        )
        spec = _resolve_text(_resolve_memory(spec, memory), text_tower)
        model.memclip_spec = spec.replace(model_cfg=_force(spec.model_cfg, *forces))
        return model
    _refuse_open_clip_only_arguments(open_clip_kwargs, pretrained)

    # The overrides decide whether the weights are a teacher's (memory added to a saved model without memory).
    plan = plan_load(_resolve_text(_resolve_memory(spec, memory), text_tower), checkpoint)
    spec = _resolve_text(_resolve_memory(plan.spec, memory), text_tower)
    spec = spec.replace(model_cfg=_force(spec.model_cfg, *forces))
    if checkpoint is None:
        logger.warning("no pretrained weights for '%s': the model is randomly initialised", spec.name)
    model = _build_memclip_model(spec, plan, precision, weights_only)
    if text_pretrained:
        load_text_tower(model, text_pretrained, weights_only=weights_only)
    _set_device_and_precision(model, device, precision)
    if output_dict and hasattr(model, "output_dict"):
        model.output_dict = True
    preprocess_cfg = merge_preprocess_dict(asdict(PreprocessCfg()), checkpoint.preprocess if checkpoint else {})
    visual = getattr(model, "visual", None)
    if visual is not None and hasattr(visual, "image_size"):
        preprocess_cfg["size"] = visual.image_size
    preprocess_cfg = merge_preprocess_dict(preprocess_cfg, force_preprocess_cfg or {})
    open_clip.set_model_preprocess_cfg(model, preprocess_cfg)
    model.memclip_spec = spec
    return model


def create_model_and_transforms(
    model_name: str,
    pretrained: Optional[str] = None,
    precision: str = "fp32",
    device: Union[str, torch.device] = "cpu",
    *,
    image_mean: Optional[Tuple[float, ...]] = None,
    image_std: Optional[Tuple[float, ...]] = None,
    image_interpolation: Optional[str] = None,
    image_resize_mode: Optional[str] = None,
    aug_cfg: Optional[Union[Dict[str, Any], AugmentationCfg]] = None,
    **kwargs: Any,
) -> Tuple[nn.Module, Callable, Callable]:
    """:func:`create_model` plus the train and val image transforms, as in open_clip.

    Returns:
        (model, preprocess_train, preprocess_val).
    """
    overrides = {"mean": image_mean, "std": image_std, "interpolation": image_interpolation,
                 "resize_mode": image_resize_mode}
    force_preprocess_cfg = {k: v for k, v in overrides.items() if v is not None}
    if kwargs.get("force_preprocess_cfg"):
        force_preprocess_cfg = {**kwargs.pop("force_preprocess_cfg"), **force_preprocess_cfg}
    model = create_model(model_name, pretrained, precision, device, force_preprocess_cfg=force_preprocess_cfg,
                         **kwargs)
    cfg = PreprocessCfg(**open_clip.get_model_preprocess_cfg(model))
    return model, image_transform_v2(cfg, is_train=True, aug_cfg=aug_cfg), image_transform_v2(cfg, is_train=False)


def create_model_from_pretrained(
    model_name: str,
    pretrained: Optional[str] = None,
    precision: str = "fp32",
    device: Union[str, torch.device] = "cpu",
    *,
    image_mean: Optional[Tuple[float, ...]] = None,
    image_std: Optional[Tuple[float, ...]] = None,
    image_interpolation: Optional[str] = None,
    image_resize_mode: Optional[str] = None,
    return_transform: bool = True,
    **kwargs: Any,
) -> Union[nn.Module, Tuple[nn.Module, Callable]]:
    """:func:`create_model` with weights required, plus the inference transform, as
    ``open_clip.create_model_from_pretrained``.

    Returns:
        (model, preprocess), or the model alone when ``return_transform`` is False.
    """
    model, _, preprocess = create_model_and_transforms(
        model_name, pretrained, precision, device, image_mean=image_mean, image_std=image_std,
        image_interpolation=image_interpolation, image_resize_mode=image_resize_mode, require_pretrained=True,
        **kwargs)
    return (model, preprocess) if return_transform else model


def get_tokenizer(model: Union[str, ModelSpec] = "", context_length: Optional[int] = None,
                  cache_dir: Optional[str] = None, **kwargs: Any) -> Callable:
    """The tokenizer of a model, as ``open_clip.get_tokenizer``; memclip's configs use CLIP's BPE tokenizer.

    Pass a name, a saved folder, an ``hf-hub:``/``local-dir:`` model, or a model's ``memclip_spec`` (then the
    context length follows its text tower, e.g. 248 tokens after a Long-CLIP stretch; a names tower gets a
    :class:`memclip.names_text.NameTokenizer`). ``cache_dir``: where Hub configs and Hugging Face tokenizers
    download.
    """
    source = hub.resolve(model, cache_dir) if hub.has_schema(model) else None
    if isinstance(model, ModelSpec):
        spec = model
    elif source is not None and source.is_memclip:
        spec = get_model_spec(str(source.folder))
    elif source is None and (is_saved_model_dir(model) or model in list_memclip_models()):
        spec = get_model_spec(model)
    else:
        return open_clip.get_tokenizer(source.open_clip_name if source is not None else model,
                                       context_length=context_length, cache_dir=cache_dir, **kwargs)
    if spec.text.kind == "names":
        return NameTokenizer(spec.text.names)
    text_cfg = spec.model_cfg.get("text_cfg", {})
    context_length = context_length or spec.context_length
    tokenizer_kwargs = {**text_cfg.get("tokenizer_kwargs", {}), **kwargs}
    if text_cfg.get("hf_tokenizer_name"):
        return open_clip.tokenizer.HFTokenizer(
            text_cfg["hf_tokenizer_name"], context_length=context_length, cache_dir=cache_dir, **tokenizer_kwargs
        )
    return open_clip.SimpleTokenizer(context_length=context_length, **tokenizer_kwargs)
