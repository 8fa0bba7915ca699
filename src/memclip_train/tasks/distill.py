"""Stage 1: distil the memory from the frozen teacher (image embeddings), and TULIP-style text distillation."""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

import memclip
from memclip.parallel import memory_gates
from memclip.errors import InputError

from ..data.samples import SampleFields
from ..distributed import DistributedEnv
from .base import Task, Terms
from .evaluation import encode_batches, mean_cosine, paired_retrieval
from .layer_matching import MlpOutputs, layer_cosine_terms


def embedding_distance(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean distance between (B, D) embeddings: ``cosine`` 1 - cos, ``mse`` squared error, ``l2`` Euclidean."""
    if kind == "cosine":
        return 1 - F.cosine_similarity(student.float(), teacher.float(), dim=-1).mean()
    if kind == "mse":
        return F.mse_loss(student.float(), teacher.float())
    if kind == "l2":
        return (student.float() - teacher.float()).norm(dim=-1).mean()
    raise InputError(f"unknown distillation loss {kind!r}")


def freeze_teacher(teacher: nn.Module) -> nn.Module:
    teacher.eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


def computes_the_teacher(student: nn.Module, teacher: nn.Module) -> bool:
    """True when the student's image tower is, right now, exactly the teacher's function: a parallel-mode student
    whose zero-initialised gates still hide its memory, on the teacher's own weights. The embedding loss and its
    gradient are then exactly zero, and so are the per-block terms (each block's output is still the teacher's), so
    distillation cannot move anything. One probe forward of two images; both models must be on the same device (the
    trainer checks on the CPU, before moving them)."""
    gates = memory_gates(student)
    if not gates or any(bool(gate.detach().ne(0).any()) for gate in gates):
        return False
    size = student.visual.image_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    param = next(student.parameters())
    probe = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0)).to(param.device, param.dtype)
    modes = student.training, teacher.training
    student.eval(), teacher.eval()
    with torch.no_grad():
        same = torch.equal(student.encode_image(probe), teacher.encode_image(probe))
    student.train(modes[0]), teacher.train(modes[1])
    return same


PARALLEL_NO_OP = ("--distill with memory mode=parallel from the student's own teacher trains nothing: the zero gate "
                  "makes the student compute exactly the teacher, so every distillation term (the embedding loss and "
                  "the per-block --distill-layer-weight terms alike) and its gradient are 0. Fine-tune the parallel "
                  "student directly (drop --distill, e.g. --long-short-alpha 0.8 --pretrained TEACHER --memory "
                  "mode=parallel), or distil from another --distill-teacher.")


class DistillTask(Task):
    """1 - cos (or mse / l2) between the student's and the frozen teacher's final image embeddings, plus
    ``layer_weight`` x the per-memory-block terms. The teacher runs under no_grad, in eval mode, outside DDP.

    Image-only data is enough; validation reports the embedding cosine, memory usage per layer, and the student's
    retrieval R@1/5 when the validation data has captions.
    """

    name = "distill"
    trainable_parts = ("memory",)
    fields = SampleFields(image=True, captions=())
    val_fields = SampleFields(image=True, captions=("text",))

    def __init__(self, model: nn.Module, teacher: nn.Module, preprocess_train: Callable, preprocess_val: Callable,
                 tokenizer: Callable, env: DistributedEnv, loss_kind: str = "cosine", layer_weight: float = 0.0,
                 val_captions: bool = True) -> None:
        super().__init__(model, preprocess_train, preprocess_val, tokenizer, env)
        self.teacher = freeze_teacher(teacher)
        self.loss_kind = loss_kind
        self.layer_weight = layer_weight
        self.blocks = sorted(memclip.memory_layers_of(model))
        if not self.blocks:
            raise InputError(f"--distill needs a model with memory; {model.memclip_spec.name} has none")
        self.student_outputs = MlpOutputs(model, self.blocks) if layer_weight > 0 else None
        self.teacher_outputs = MlpOutputs(self.teacher, self.blocks) if layer_weight > 0 else None
        if not val_captions:
            self.val_fields = SampleFields(image=True, captions=())

    def forward(self, model: nn.Module, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        with torch.no_grad():
            teacher = self.teacher.encode_image(batch["image"], normalize=True)
        student = model(batch["image"])[0]
        features = {"student": student, "teacher": teacher}
        if self.student_outputs is not None:
            for index, output in self.student_outputs.pop().items():
                features[f"student_block{index}"] = output
            for index, output in self.teacher_outputs.pop().items():
                features[f"teacher_block{index}"] = output
        return features

    def loss(self, features: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, Terms]:
        embedding = embedding_distance(features["student"], features["teacher"], self.loss_kind)
        terms: Terms = {f"distill_{self.loss_kind}": embedding}
        total = embedding
        if self.layer_weight > 0:
            student = {i: features[f"student_block{i}"] for i in self.blocks}
            teacher = {i: features[f"teacher_block{i}"] for i in self.blocks}
            for index, term in layer_cosine_terms(student, teacher).items():
                terms[f"layer{index}_cosine"] = term
                total = total + self.layer_weight * term
        terms["total"] = total
        return total, terms

    def validate(self, loader, autocast: Callable) -> Dict[str, float]:
        """Embedding cosine to the teacher and the student's retrieval; the trainer adds memory usage per layer."""
        roles = self.val_fields.captions
        student = encode_batches(self.model, loader, autocast, self.env.device, roles=roles)
        teacher = encode_batches(self.teacher, loader, autocast, self.env.device, roles=())
        metrics = {"val_distill_cosine": mean_cosine(student["image"], teacher["image"])}
        if "text" in student:
            metrics.update(paired_retrieval(student["image"], student["text"], "val"))
        return metrics


class TextDistillTask(Task):
    """TULIP stage 1: a RoPE text tower learns to reproduce the frozen CLIP text tower's embeddings (1 - cos).

    Both towers read the same tokens at the teacher's context length (77 for CLIP), so captions are cut where the
    teacher cuts them. Only the text tower trains by default; extend the context afterwards with
    ``--rope-ntk-factor`` and ``--text-context-length`` when fine-tuning.
    """

    name = "distill_text"
    trainable_parts = ("text",)
    fields = SampleFields(image=False, captions=("text",))
    val_fields = SampleFields(image=True, captions=("text",))

    def __init__(self, model: nn.Module, teacher: nn.Module, preprocess_train: Callable, preprocess_val: Callable,
                 tokenizer: Callable, env: DistributedEnv, val_images: bool = True) -> None:
        super().__init__(model, preprocess_train, preprocess_val, tokenizer, env)
        self.teacher = freeze_teacher(teacher)
        if not val_images:
            self.val_fields = SampleFields(image=False, captions=("text",))

    def forward(self, model: nn.Module, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        with torch.no_grad():
            teacher = self.teacher.encode_text(batch["text"], normalize=True)
        student = model(None, batch["text"])[1]
        return {"student": student, "teacher": teacher}

    def loss(self, features: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, Terms]:
        total = embedding_distance(features["student"], features["teacher"], "cosine")
        return total, {"total": total, "text_cosine": total}

    def validate(self, loader, autocast: Callable) -> Dict[str, float]:
        image = self.val_fields.image
        student = encode_batches(self.model, loader, autocast, self.env.device, image=False, roles=("text",))
        teacher = encode_batches(self.teacher, loader, autocast, self.env.device, image=image, roles=("text",))
        metrics = {"val_text_cosine": mean_cosine(student["text"], teacher["text"])}
        if image:
            metrics.update(paired_retrieval(teacher["image"], student["text"], "val_student"))
            metrics.update(paired_retrieval(teacher["image"], teacher["text"], "val_teacher"))
        return metrics

