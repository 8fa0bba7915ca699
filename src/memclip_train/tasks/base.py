"""`Task`: the interface the trainer drives."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from ..data.samples import SampleFields
from ..distributed import DistributedEnv

Terms = Dict[str, torch.Tensor]


class Task(ABC):
    """A training objective over one trained model.

    Attributes:
        name: the task's name in logs.
        model: the trained model (never wrapped; the trainer wraps it in DDP and passes the wrapper to forward).
        fields: what the training data must provide.
        val_fields: what the validation data must provide.
        preprocess_train, preprocess_val: image transforms.
        tokenizer: the trained model's tokenizer.
        couples_batch: the loss couples samples (contrastive), so gradient accumulation must cache features
            across micro-batches (open_clip's --accum-freq) instead of averaging micro-batch losses.
        trainable_parts: the default for --trainable.
    """

    name: str = "task"
    couples_batch: bool = False
    trainable_parts: Sequence[str] = ("all",)

    def __init__(self, model: nn.Module, preprocess_train: Callable, preprocess_val: Callable,
                 tokenizer: Optional[Callable], env: DistributedEnv) -> None:
        self.model = model
        self.preprocess_train = preprocess_train
        self.preprocess_val = preprocess_val
        self.tokenizer = tokenizer
        self.env = env

    fields: SampleFields = SampleFields()
    val_fields: SampleFields = SampleFields()

    @abstractmethod
    def forward(self, model: nn.Module, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Run the (possibly DDP-wrapped) trained model on a batch; return the features the loss needs."""

    @abstractmethod
    def loss(self, features: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, Terms]:
        """(total loss, named terms including 'total') from features."""

    @abstractmethod
    def validate(self, loader, autocast: Callable) -> Dict[str, float]:
        """Validation metrics on a loader of ``val_fields`` batches (run on rank 0)."""

    def after_step(self) -> None:
        """Called after each optimizer step (e.g. to clamp the logit scale)."""
