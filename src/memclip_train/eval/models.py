"""Loading the models to compare: (model, pretrained) pairs, their display names and cache identities."""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import torch

import memclip


@dataclass(frozen=True)
class ModelRef:
    """A model to evaluate: an architecture name and its weights (None: random, for smoke tests)."""

    model: str
    pretrained: Optional[str] = None
    text_tower: Optional[Dict[str, Any]] = None

    @property
    def label(self) -> str:
        weights = self.pretrained or "random"
        if os.path.exists(weights):
            weights = os.path.basename(os.path.normpath(weights)) or weights
        return f"{self.model} ({weights})" if not os.path.isdir(self.model) else os.path.basename(self.model)

    @property
    def tag(self) -> str:
        """A file-name-safe identifier for result files."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", self.label).strip("_")

    def identity(self) -> Dict[str, Any]:
        """What makes results reusable: the names, and the checkpoint file's size and time when it is a path."""
        ident: Dict[str, Any] = {"model": self.model, "pretrained": self.pretrained, "text_tower": self.text_tower}
        for key in ("model", "pretrained"):
            path = getattr(self, key)
            if path and os.path.exists(path):
                target = path
                if os.path.isdir(path):
                    target = os.path.join(path, "open_clip_model.safetensors")
                if os.path.exists(target):
                    stat = os.stat(target)
                    ident[f"{key}_file"] = [os.path.abspath(target), stat.st_size, stat.st_mtime_ns]
        return ident


@dataclass
class LoadedModel:
    ref: ModelRef
    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable


def load_model(ref: ModelRef, device: torch.device) -> LoadedModel:
    pretrained = None if ref.pretrained in (None, "", "none", "random") else ref.pretrained
    model, _, preprocess = memclip.create_model_and_transforms(ref.model, pretrained=pretrained, device=device,
                                                               text_tower=ref.text_tower)
    model.eval()
    return LoadedModel(ref, model, preprocess, memclip.get_tokenizer(model.memclip_spec))


def autocast_for(precision: str, device: torch.device) -> Callable:
    dtype = torch.bfloat16 if precision in ("amp_bf16", "bf16") else torch.float16
    return functools.partial(torch.autocast, device_type=device.type, dtype=dtype, enabled=precision != "fp32")
