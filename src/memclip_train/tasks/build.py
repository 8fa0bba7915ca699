"""Building a task and its models from a :class:`TrainConfig`."""
from __future__ import annotations

import logging
import math
from typing import Any, Dict, List, Optional, Tuple

import open_clip
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict
from open_clip.transformer import lock_text_tower
from torch import nn

import memclip
from memclip.errors import InputError

from ..distributed import DistributedEnv
from ..params import TrainConfig
from ..trainable import set_trainable
from .base import Task
from .contrastive import ContrastiveTask, LongShortTask
from .distill import PARALLEL_NO_OP, DistillTask, TextDistillTask, computes_the_teacher

logger = logging.getLogger(__name__)


def text_tower_overrides(config: TrainConfig) -> Optional[Dict[str, Any]]:
    """The ``text_tower`` argument of ``memclip.create_model`` from the text flags (None: keep the model's)."""
    m = config.model
    overrides: Dict[str, Any] = {}
    if m.text_tower_kind:
        overrides["kind"] = m.text_tower_kind
    if m.text_context_length is not None:
        overrides["context_length"] = m.text_context_length
    if m.text_pos_stretch is not None:
        overrides["pos_stretch"] = m.text_pos_stretch
    if m.rope_ntk_factor is not None:
        overrides["rope_ntk_factor"] = m.rope_ntk_factor
    if m.text_names:
        overrides.update(names=m.text_names, names_seed=m.text_names_seed)
    return overrides or None


def transforms(model: nn.Module, config: Optional[TrainConfig] = None) -> Tuple:
    """Train and val transforms from the model's preprocess config, with ``--image-*`` overrides (recorded in the
    model, so its saved folder keeps them) and ``--aug-cfg`` for the training transform."""
    cfg = dict(open_clip.get_model_preprocess_cfg(model))
    augmentation = None
    if config is not None:
        if config.model.preprocess_overrides:
            cfg = merge_preprocess_dict(cfg, config.model.preprocess_overrides)
            open_clip.set_model_preprocess_cfg(model, cfg)
        augmentation = dict(config.model.aug_cfg) or None
    preprocess = PreprocessCfg(**cfg)
    return (image_transform_v2(preprocess, is_train=True, aug_cfg=augmentation),
            image_transform_v2(preprocess, is_train=False))


def cast_image_inputs(model: nn.Module) -> None:
    """Feed the image tower inputs in its own dtype (``--precision bf16|fp16|pure_*`` weights; open_clip_train casts
    the batch the same way)."""
    dtype = model.visual.conv1.weight.dtype if hasattr(model.visual, "conv1") else None
    if dtype in (None, torch.float32):
        return
    model.visual.register_forward_pre_hook(
        lambda module, inputs: tuple(x.to(dtype) if torch.is_tensor(x) and x.is_floating_point() else x
                                     for x in inputs))


def add_logit_bias(model: nn.Module, pretrained: bool) -> None:
    """SigLIP's learnable logit bias, as open_clip_train's ``--siglip`` creates it: scale log(10) and bias -10 for a
    model trained from scratch; a pretrained model keeps its scale and starts at bias 0 (open_clip's rule for
    checkpoints without one). The bias is recorded in the model's config, so saved models rebuild with it."""
    if getattr(model, "logit_bias", None) is not None:
        return
    bias = 0.0 if pretrained else -10.0
    model.logit_bias = nn.Parameter(torch.full((), bias, device=model.logit_scale.device))
    if not pretrained:
        with torch.no_grad():
            model.logit_scale.fill_(math.log(10))
    model.memclip_spec = model.memclip_spec.replace(model_cfg=dict(model.memclip_spec.model_cfg, init_logit_bias=bias))


def lock_towers(config: TrainConfig, model: nn.Module) -> None:
    """``--lock-image`` (LiT: the image tower, memory included, except its last N layer groups) and
    ``--lock-text-unlocked-layers`` (with ``--lock-text``: the last N text layers train), as in open_clip_train."""
    m = config.model
    if m.lock_image:
        model.lock_image_tower(unlocked_groups=m.lock_image_unlocked_groups,
                               freeze_bn_stats=m.lock_image_freeze_bn_stats)
    if m.lock_text and m.lock_text_unlocked_layers:
        lock_text_tower(model, m.lock_text_unlocked_layers)


def trainable_parts(config: TrainConfig, task_default) -> List[str]:
    if config.model.trainable is not None:
        parts = list(config.model.trainable)
    elif config.task.distill:
        parts = list(config.task.distill_trainable)
    else:
        parts = list(task_default)
    if config.model.lock_text:
        parts = ["visual", "logit_scale"] if "all" in parts else [p for p in parts if p != "text"]
    return parts


def _create(config: TrainConfig, pretrained: Optional[str], **kwargs: Any) -> nn.Module:
    model = memclip.create_model(config.model.model, pretrained=pretrained, memory=config.model.memory_overrides,
                                 **config.model.create_kwargs, **kwargs)
    cast_image_inputs(model)
    return model


def _create_frozen(config: TrainConfig, name: str, pretrained: Optional[str]) -> nn.Module:
    """A teacher: the same precision and architecture overrides as the trained model."""
    kwargs = {k: v for k, v in config.model.create_kwargs.items() if k != "pretrained_image"}
    model = memclip.create_model(name, pretrained=pretrained, **kwargs)
    cast_image_inputs(model)
    return model


def build_task(config: TrainConfig, env: DistributedEnv, has_val_captions: bool = True) -> Task:
    """Create the trained model (and teacher), set what trains, and wrap them in the configured task."""
    kind = config.task.kind
    text = text_tower_overrides(config)
    text_path = config.model.text_tower_path
    if kind == "distill":
        teacher_weights = config.task.distill_teacher or config.model.pretrained
        student = _create(config, config.model.pretrained or teacher_weights, text_tower=text,
                          text_pretrained=text_path)
        teacher_name = student.memclip_spec.teacher
        teacher = _create_frozen(config, teacher_name, teacher_weights)
        if memclip.memory_layers_of(teacher):
            raise InputError(f"the distillation teacher weights {teacher_weights} hold memory layers: give the "
                             "teacher's own checkpoint with --distill-teacher")
        if computes_the_teacher(student, teacher):
            raise InputError(PARALLEL_NO_OP)
        preprocess_train, preprocess_val = transforms(student, config)
        task: Task = DistillTask(student, teacher.to(env.device), preprocess_train, preprocess_val,
                                 memclip.get_tokenizer(student.memclip_spec), env, config.task.distill_loss,
                                 config.task.distill_layer_weight, val_captions=has_val_captions)
    elif kind == "distill_text":
        teacher = _create(config, config.model.pretrained)
        rope = dict(text or {}, kind="rope", context_length=teacher.memclip_spec.context_length)
        student = _create(config, config.model.pretrained, text_tower=rope)
        preprocess_train, preprocess_val = transforms(student, config)
        task = TextDistillTask(student, teacher.to(env.device), preprocess_train, preprocess_val,
                               memclip.get_tokenizer(student.memclip_spec), env, val_images=has_val_captions)
    else:
        model = _create(config, config.model.pretrained, text_tower=text, text_pretrained=text_path)
        if config.task.siglip:
            add_logit_bias(model, pretrained=bool(config.model.pretrained))
        preprocess_train, preprocess_val = transforms(model, config)
        tokenizer = memclip.get_tokenizer(model.memclip_spec)
        t = config.task
        if kind == "long_short":
            task = LongShortTask(model, preprocess_train, preprocess_val, tokenizer, env, t.long_short_alpha,
                                 t.local_loss, t.gather_with_grad, t.siglip, t.loss_dist_impl)
        else:
            dist_model = None
            if t.distill_model:
                dist_model = _create_frozen(config, t.distill_model, t.distill_pretrained).to(env.device)
            task = ContrastiveTask(model, preprocess_train, preprocess_val, tokenizer, env, t.local_loss,
                                   t.gather_with_grad, t.siglip, t.loss_dist_impl, dist_model)
    task.model.to(env.device)
    if config.model.grad_checkpointing:
        task.model.set_grad_checkpointing(True)
    parts = trainable_parts(config, task.trainable_parts)
    counts = set_trainable(task.model, parts)
    lock_towers(config, task.model)
    if not any(p.requires_grad for p in task.model.parameters()):
        raise InputError("--lock-image / --lock-text leave nothing to train in this model")
    total = sum(p.numel() for p in task.model.parameters())
    trainable = sum(p.numel() for p in task.model.parameters() if p.requires_grad)
    logger.info("task %s on %s: training %s = %.3fM of %.3fM parameters", task.name, task.model.memclip_spec.name,
                ", ".join(f"{k} ({v / 1e6:.3f}M)" for k, v in counts.items()), trainable / 1e6, total / 1e6)
    return task
