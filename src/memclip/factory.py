"""memclip's factory: open_clip's API (`create_model`, `create_model_and_transforms`, `get_tokenizer`) for memory models.

Models without memory that open_clip knows pass straight to open_clip. For a memory model (or one of memclip's own
architectures) the factory:

1. builds the teacher architecture with open_clip's model classes;
2. loads ``pretrained`` when it names teacher weights (an open_clip tag of the teacher, or an open_clip checkpoint);
3. swaps memory layers into the listed vision blocks;
4. loads student weights when ``pretrained`` is a saved memclip model or a training checkpoint with memory keys.
"""
from __future__ import annotations

import copy
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import open_clip
import torch
from open_clip.factory import load_state_dict as open_clip_load_state_dict
from open_clip.model import resize_pos_embed, resize_text_pos_embed
from open_clip.transform import AugmentationCfg, PreprocessCfg, image_transform_v2, merge_preprocess_dict
from torch import nn

from memory_layers import MemoryConfig

from .checkpoint import WEIGHTS_NAME, load_model_state_dict
from .registry import ModelSpec, get_model_spec, is_saved_model_dir, list_memclip_models, read_saved_config
from .surgery import attach_memory

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16", "pure_fp16", "pure_bf16", "amp", "amp_bf16", "amp_bfloat16")


def _resolve_memory(spec: ModelSpec, memory: Union[None, MemoryConfig, Mapping[str, Any]]) -> ModelSpec:
    """Apply a ``memory`` argument: a MemoryConfig replaces the spec's; a dict overrides some of its fields."""
    if memory is None:
        return spec
    if isinstance(memory, MemoryConfig):
        return spec.with_memory(memory)
    if not isinstance(memory, Mapping):
        raise TypeError(f"memory must be a MemoryConfig or a dict of overrides, got {type(memory).__name__}")
    base = spec.memory.to_dict() if spec.memory is not None else {}
    return spec.with_memory(MemoryConfig.from_dict({**base, **dict(memory)}))


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
        model_class = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    return model_class(**cfg, cast_dtype=open_clip.get_cast_dtype(precision))


def _set_device_and_precision(model: nn.Module, device: torch.device, precision: str) -> None:
    if precision in ("fp16", "bf16"):
        dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        model.to(device=device)
        open_clip.convert_weights_to_lp(model, dtype=dtype)
        from memory_layers import ProductKeyMemory

        for module in model.modules():
            if isinstance(module, ProductKeyMemory):
                module.to(dtype=dtype)
    elif precision in ("pure_fp16", "pure_bf16"):
        model.to(device=device, dtype=torch.float16 if precision == "pure_fp16" else torch.bfloat16)
    else:
        model.to(device=device)


def _student_only_keys(state_dict: Mapping[str, Any], base: nn.Module) -> set:
    return set(state_dict) - set(base.state_dict())


def _resolve_pretrained(
    spec: ModelSpec, pretrained: str, cache_dir: Optional[str]
) -> Tuple[str, Dict[str, Any]]:
    """Turn ``pretrained`` into (checkpoint path, preprocess overrides).

    Accepts a saved memclip folder, a checkpoint file (.pt/.pth/.bin/.safetensors), or an open_clip tag of the
    teacher architecture.
    """
    if is_saved_model_dir(pretrained):
        saved = read_saved_config(pretrained)
        return str(Path(pretrained) / WEIGHTS_NAME), saved.get("preprocess_cfg", {})
    if os.path.isfile(pretrained):
        return pretrained, {}
    tag_cfg = open_clip.get_pretrained_cfg(spec.teacher, pretrained) if spec.teacher else {}
    if tag_cfg:
        try:
            path = open_clip.download_pretrained(tag_cfg, cache_dir=cache_dir)
        except Exception as error:  # network, hub or cache failures: say which weights and where
            raise RuntimeError(
                f"could not download pretrained '{pretrained}' for teacher '{spec.teacher}' of '{spec.name}': "
                f"{error}. Offline? Pass a local checkpoint file or saved memclip folder instead."
            ) from error
        return path, tag_cfg
    if os.path.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")):
        raise FileNotFoundError(f"pretrained checkpoint not found: {pretrained}")
    known = open_clip.list_pretrained_tags_by_model(spec.teacher) if spec.teacher else []
    raise RuntimeError(
        f"pretrained '{pretrained}' for '{spec.name}' is neither a file, a saved memclip folder, nor an open_clip tag "
        f"of its teacher '{spec.teacher}' (known tags: {known})"
    )


def create_model(
    model_name: str,
    pretrained: Optional[str] = None,
    precision: str = "fp32",
    device: Union[str, torch.device] = "cpu",
    *,
    memory: Union[None, MemoryConfig, Mapping[str, Any]] = None,
    force_quick_gelu: bool = False,
    force_patch_dropout: Optional[float] = None,
    force_image_size: Optional[Union[int, Tuple[int, int]]] = None,
    force_context_length: Optional[int] = None,
    force_preprocess_cfg: Optional[Dict[str, Any]] = None,
    cache_dir: Optional[str] = None,
    output_dict: Optional[bool] = None,
    require_pretrained: bool = False,
    **open_clip_kwargs: Any,
) -> nn.Module:
    """Create a model by name, as ``open_clip.create_model`` does, with memory where the config asks for it.

    Args:
        model_name: a memclip config (``ViT-B-16-mem``, ``ViT-Tiny-8``), a saved memclip folder, or any open_clip
            name (``ViT-B-32``, ``hf-hub:...``), which passes to open_clip unchanged.
        pretrained: an open_clip tag of the teacher (``openai``), a checkpoint file (teacher or student), or a
            folder written by :func:`memclip.save_pretrained`. None: random weights.
        precision: fp32, fp16, bf16, pure_fp16, pure_bf16 (amp variants keep fp32 weights).
        device: where the model goes.
        memory: a :class:`MemoryConfig` replacing the config's memory block, or a dict of field overrides (which
            can also add memory to an architecture that has none).
        force_*: as in open_clip.
        open_clip_kwargs: passed to ``open_clip.create_model`` for models that go straight to open_clip.
    Returns:
        The model, with ``model.memclip_spec`` (a :class:`ModelSpec`) attached.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: must be one of {PRECISIONS}")
    saved_dir = is_saved_model_dir(model_name)
    spec = _resolve_memory(get_model_spec(model_name), memory)
    device = torch.device(device) if isinstance(device, str) else device
    passthrough = not spec.has_memory and not saved_dir and model_name not in list_memclip_models()
    if passthrough:
        model = open_clip.create_model(
            model_name, pretrained=pretrained, precision=precision, device=device, force_quick_gelu=force_quick_gelu,
            force_patch_dropout=force_patch_dropout, force_image_size=force_image_size,
            force_context_length=force_context_length, force_preprocess_cfg=force_preprocess_cfg,
            cache_dir=cache_dir, output_dict=output_dict, require_pretrained=require_pretrained, **open_clip_kwargs,
        )
        model.memclip_spec = spec
        return model
    if open_clip_kwargs:
        raise TypeError(f"create_model got arguments open_clip-only models take: {sorted(open_clip_kwargs)}")

    model_cfg = copy.deepcopy(spec.model_cfg)
    if force_quick_gelu:
        model_cfg["quick_gelu"] = True
    if force_patch_dropout is not None:
        model_cfg["vision_cfg"]["patch_dropout"] = force_patch_dropout
    if force_image_size is not None:
        model_cfg["vision_cfg"]["image_size"] = force_image_size
    if force_context_length is not None:
        model_cfg["text_cfg"]["context_length"] = force_context_length
    spec = ModelSpec(spec.name, model_cfg, spec.memory, spec.teacher)

    if pretrained is None and saved_dir:
        pretrained = model_name
    model = _instantiate(model_cfg, precision)
    preprocess_cfg = asdict(PreprocessCfg())
    checkpoint_path = None
    if pretrained:
        checkpoint_path, preprocess_overrides = _resolve_pretrained(spec, pretrained, cache_dir)
        preprocess_cfg = merge_preprocess_dict(preprocess_cfg, preprocess_overrides)
    elif require_pretrained:
        raise RuntimeError(f"require_pretrained=True but no pretrained weights were given for '{model_name}'")

    student_state = None
    if checkpoint_path is not None:
        state_dict = open_clip_load_state_dict(checkpoint_path)
        if spec.has_memory and _student_only_keys(state_dict, model):
            student_state = state_dict
        else:
            logger.info("loading teacher weights for %s from %s", spec.name, checkpoint_path)
            open_clip.load_checkpoint(model, checkpoint_path, strict=True)
    else:
        logger.warning("no pretrained weights for '%s': the model is randomly initialised", spec.name)

    if spec.memory is not None:
        attach_memory(model, spec.memory)
    if student_state is not None:
        logger.info("loading student weights for %s from %s", spec.name, checkpoint_path)
        resize_pos_embed(student_state, model)
        resize_text_pos_embed(student_state, model)
        load_model_state_dict(model, student_state, source=checkpoint_path)

    _set_device_and_precision(model, device, precision)
    if output_dict and hasattr(model, "output_dict"):
        model.output_dict = True
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


def get_tokenizer(model_name: str = "", context_length: Optional[int] = None, **kwargs: Any) -> Callable:
    """The tokenizer of a model, as ``open_clip.get_tokenizer``; memclip's configs use CLIP's BPE tokenizer."""
    if not is_saved_model_dir(model_name) and model_name not in list_memclip_models():
        return open_clip.get_tokenizer(model_name, context_length=context_length, **kwargs)
    text_cfg = get_model_spec(model_name).model_cfg.get("text_cfg", {})
    context_length = context_length or text_cfg.get("context_length", 77)
    tokenizer_kwargs = {**text_cfg.get("tokenizer_kwargs", {}), **kwargs}
    if text_cfg.get("hf_tokenizer_name"):
        return open_clip.tokenizer.HFTokenizer(
            text_cfg["hf_tokenizer_name"], context_length=context_length, **tokenizer_kwargs
        )
    return open_clip.SimpleTokenizer(context_length=context_length, **tokenizer_kwargs)
