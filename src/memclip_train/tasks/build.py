"""Building a task and its models from a :class:`TrainConfig`."""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Tuple

import open_clip
from open_clip.transform import PreprocessCfg, image_transform_v2
from torch import nn

import memclip

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
    return overrides or None


def transforms(model: nn.Module) -> Tuple:
    cfg = PreprocessCfg(**open_clip.get_model_preprocess_cfg(model))
    return image_transform_v2(cfg, is_train=True), image_transform_v2(cfg, is_train=False)


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
    return memclip.create_model(config.model.model, pretrained=pretrained, memory=config.model.memory_overrides,
                                **kwargs)


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
        teacher = memclip.create_model(teacher_name, pretrained=teacher_weights)
        if memclip.memory_layers_of(teacher):
            raise ValueError(f"the distillation teacher weights {teacher_weights} hold memory layers: give the "
                             "teacher's own checkpoint with --distill-teacher")
        if computes_the_teacher(student, teacher):
            raise ValueError(PARALLEL_NO_OP)
        preprocess_train, preprocess_val = transforms(student)
        task: Task = DistillTask(student, teacher.to(env.device), preprocess_train, preprocess_val,
                                 memclip.get_tokenizer(student.memclip_spec), env, config.task.distill_loss,
                                 config.task.distill_layer_weight, val_captions=has_val_captions)
    elif kind == "distill_text":
        teacher = _create(config, config.model.pretrained)
        rope = dict(text or {}, kind="rope", context_length=teacher.memclip_spec.context_length)
        student = _create(config, config.model.pretrained, text_tower=rope)
        preprocess_train, preprocess_val = transforms(student)
        task = TextDistillTask(student, teacher.to(env.device), preprocess_train, preprocess_val,
                               memclip.get_tokenizer(student.memclip_spec), env, val_images=has_val_captions)
    else:
        model = _create(config, config.model.pretrained, text_tower=text, text_pretrained=text_path)
        preprocess_train, preprocess_val = transforms(model)
        tokenizer = memclip.get_tokenizer(model.memclip_spec)
        if kind == "long_short":
            task = LongShortTask(model, preprocess_train, preprocess_val, tokenizer, env,
                                 config.task.long_short_alpha, config.task.local_loss, config.task.gather_with_grad)
        else:
            task = ContrastiveTask(model, preprocess_train, preprocess_val, tokenizer, env, config.task.local_loss,
                                   config.task.gather_with_grad)
    task.model.to(env.device)
    if config.model.grad_checkpointing:
        task.model.set_grad_checkpointing(True)
    parts = trainable_parts(config, task.trainable_parts)
    counts = set_trainable(task.model, parts)
    total = sum(p.numel() for p in task.model.parameters())
    trainable = sum(p.numel() for p in task.model.parameters() if p.requires_grad)
    logger.info("task %s on %s: training %s = %.3fM of %.3fM parameters", task.name, task.model.memclip_spec.name,
                ", ".join(f"{k} ({v / 1e6:.3f}M)" for k, v in counts.items()), trainable / 1e6, total / 1e6)
    return task
