"""Contrastive CLIP training (InfoNCE over the global batch) and its stage-2 variant on long + short captions."""
from __future__ import annotations

import math
from typing import Callable, Dict, Tuple

import torch
from open_clip.loss import ClipLoss
from torch import nn

from ..data.samples import SampleFields
from ..distributed import DistributedEnv
from .base import Task, Terms
from .evaluation import encode_batches, paired_retrieval

MAX_LOGIT_SCALE = math.log(100)


class ContrastiveTask(Task):
    """CLIP's symmetric InfoNCE on (image, ``--caption-key`` caption) pairs; the logit scale is clamped at 100.

    ``--local-loss`` and ``--gather-with-grad`` keep open_clip's meaning (``open_clip.loss.ClipLoss``).
    """

    name = "contrastive"
    couples_batch = True
    trainable_parts = ("all",)
    fields = SampleFields(image=True, captions=("text",))
    val_fields = SampleFields(image=True, captions=("text",))

    def __init__(self, model: nn.Module, preprocess_train: Callable, preprocess_val: Callable, tokenizer: Callable,
                 env: DistributedEnv, local_loss: bool = False, gather_with_grad: bool = False) -> None:
        super().__init__(model, preprocess_train, preprocess_val, tokenizer, env)
        self.clip_loss = ClipLoss(local_loss=local_loss, gather_with_grad=gather_with_grad, cache_labels=True,
                                  rank=env.rank, world_size=env.world_size)

    def forward(self, model: nn.Module, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        image, text, scale = model(batch["image"], batch["text"])[:3]
        return {"image": image, "text": text, "logit_scale": scale}

    def loss(self, features: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, Terms]:
        total = self.clip_loss(features["image"], features["text"], features["logit_scale"])
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
                 env: DistributedEnv, alpha: float, local_loss: bool = False, gather_with_grad: bool = False) -> None:
        super().__init__(model, preprocess_train, preprocess_val, tokenizer, env, local_loss, gather_with_grad)
        self.alpha = alpha

    def forward(self, model: nn.Module, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        texts = torch.cat([batch["long"], batch["short"]])
        image, text, scale = model(batch["image"], texts)[:3]
        long, short = text.split(batch["long"].shape[0])
        return {"image": image, "long": long, "short": short, "logit_scale": scale}

    def loss(self, features: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, Terms]:
        long = self.clip_loss(features["image"], features["long"], features["logit_scale"])
        short = self.clip_loss(features["image"], features["short"], features["logit_scale"])
        total = self.alpha * long + (1 - self.alpha) * short
        return total, {"total": total, "long": long, "short": short}

    def validate(self, loader, autocast: Callable) -> Dict[str, float]:
        features = encode_batches(self.model, loader, autocast, self.env.device, roles=("long", "short"))
        return {**paired_retrieval(features["image"], features["long"], "val_long"),
                **paired_retrieval(features["image"], features["short"], "val_short")}

