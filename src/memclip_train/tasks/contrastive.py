"""Contrastive CLIP training (InfoNCE or SigLIP over the global batch, optionally distilled from another CLIP's
logits) and its stage-2 variant on long + short captions."""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import torch
from open_clip.loss import ClipLoss, DistillClipLoss, SigLipLoss
from torch import nn

from ..data.samples import SampleFields
from ..distributed import DistributedEnv
from .base import Task, Terms
from .distill import freeze_teacher
from .evaluation import encode_batches, paired_retrieval

MAX_LOGIT_SCALE = math.log(100)


class ContrastiveTask(Task):
    """CLIP's symmetric InfoNCE on (image, ``--caption-key`` caption) pairs; the logit scale is clamped at 100.

    ``--local-loss`` and ``--gather-with-grad`` keep open_clip's meaning (``open_clip.loss.ClipLoss``). ``siglip``
    uses ``open_clip.loss.SigLipLoss`` (the model then has a ``logit_bias``); ``dist_model`` (open_clip_train's
    ``--distill-model``) adds ``open_clip.loss.DistillClipLoss``'s cross-entropy to a frozen CLIP's logits.
    """

    name = "contrastive"
    couples_batch = True
    trainable_parts = ("all",)
    fields = SampleFields(image=True, captions=("text",))
    val_fields = SampleFields(image=True, captions=("text",))

    def __init__(self, model: nn.Module, preprocess_train: Callable, preprocess_val: Callable, tokenizer: Callable,
                 env: DistributedEnv, local_loss: bool = False, gather_with_grad: bool = False,
                 siglip: bool = False, loss_dist_impl: Optional[str] = None,
                 dist_model: Optional[nn.Module] = None) -> None:
        super().__init__(model, preprocess_train, preprocess_val, tokenizer, env)
        self.siglip = siglip
        self.dist_model = freeze_teacher(dist_model) if dist_model is not None else None
        if siglip:
            self.clip_loss: nn.Module = SigLipLoss(cache_labels=True, rank=env.rank, world_size=env.world_size,
                                                   dist_impl=loss_dist_impl)
        elif dist_model is not None:
            self.clip_loss = DistillClipLoss(local_loss=local_loss, gather_with_grad=gather_with_grad,
                                             cache_labels=True, rank=env.rank, world_size=env.world_size)
        else:
            self.clip_loss = ClipLoss(local_loss=local_loss, gather_with_grad=gather_with_grad, cache_labels=True,
                                      rank=env.rank, world_size=env.world_size)

    def _encode(self, model: nn.Module, image: torch.Tensor, text: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Image and text features, the (exponentiated) logit scale, and the logit bias when the model has one."""
        out = model(image, text)
        features = {"image": out[0], "text": out[1], "logit_scale": out[2]}
        if len(out) > 3:
            features["logit_bias"] = out[3]
        return features

    def pair_loss(self, features: Dict[str, torch.Tensor], text: str) -> torch.Tensor:
        """The contrastive (or sigmoid) loss of the images against the ``text`` features."""
        if self.siglip:
            return self.clip_loss(features["image"], features[text], features["logit_scale"], features["logit_bias"])
        return self.clip_loss(features["image"], features[text], features["logit_scale"])

    def forward(self, model: nn.Module, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        features = self._encode(model, batch["image"], batch["text"])
        if self.dist_model is not None:
            with torch.no_grad():
                teacher = self._encode(self.dist_model, batch["image"], batch["text"])
            features.update({f"dist_{k}": v for k, v in teacher.items()})
        return features

    def loss(self, features: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, Terms]:
        if self.dist_model is not None:
            contrastive, distill = self.clip_loss(features["image"], features["text"], features["logit_scale"],
                                                  features["dist_image"], features["dist_text"],
                                                  features["dist_logit_scale"])
            total = contrastive + distill
            return total, {"total": total, "contrastive": contrastive, "distill": distill}
        total = self.pair_loss(features, "text")
        return total, {"total": total, "contrastive": total}

    def after_step(self) -> None:
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    def validate(self, loader, autocast: Callable) -> Dict[str, float]:
        features = encode_batches(self.model, loader, autocast, self.env.device, roles=("text",))
        return paired_retrieval(features["image"], features["text"], "val")


class LongShortTask(ContrastiveTask):
    """Stage 2: ``alpha * CLIP(I, long) + (1 - alpha) * CLIP(I, short)`` from one image forward.

    Long and short captions go through the text tower as one batch. The short caption is ``--caption-key`` when the
    sample has it, else the long caption's first sentence.
    """

    name = "long_short"
    trainable_parts = ("memory", "visual")
    fields = SampleFields(image=True, captions=("long", "short"))
    val_fields = SampleFields(image=True, captions=("long", "short"))

    def __init__(self, model: nn.Module, preprocess_train: Callable, preprocess_val: Callable, tokenizer: Callable,
                 env: DistributedEnv, alpha: float, local_loss: bool = False, gather_with_grad: bool = False,
                 siglip: bool = False, loss_dist_impl: Optional[str] = None) -> None:
        super().__init__(model, preprocess_train, preprocess_val, tokenizer, env, local_loss, gather_with_grad,
                         siglip, loss_dist_impl)
        self.alpha = alpha

    def forward(self, model: nn.Module, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        features = self._encode(model, batch["image"], torch.cat([batch["long"], batch["short"]]))
        features["long"], features["short"] = features.pop("text").split(batch["long"].shape[0])
        return features

    def loss(self, features: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, Terms]:
        long = self.pair_loss(features, "long")
        short = self.pair_loss(features, "short")
        total = self.alpha * long + (1 - self.alpha) * short
        return total, {"total": total, "long": long, "short": short}

    def validate(self, loader, autocast: Callable) -> Dict[str, float]:
        features = encode_batches(self.model, loader, autocast, self.env.device, roles=("long", "short"))
        return {**paired_retrieval(features["image"], features["long"], "val_long"),
                **paired_retrieval(features["image"], features["short"], "val_short")}

