"""Loading the models to compare: (model, pretrained) pairs, their display names and cache identities."""
from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import open_clip
import torch

import memclip
from memclip import hub

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRef:
    """A model to evaluate: an architecture name and its weights (None: random, for smoke tests)."""

    model: str
    pretrained: Optional[str] = None
    text_tower: Optional[Dict[str, Any]] = None
    name: Optional[str] = None

    @property
    def label(self) -> str:
        """The row name in tables: ``name`` if given, else the model and a short form of its weights."""
        if self.name:
            return self.name
        if hub.has_schema(self.model):
            return self.model
        if os.path.isdir(self.model):
            return _short_path(self.model)
        weights = self.pretrained or "random"
        return f"{self.model} ({_short_path(weights) if os.path.exists(weights) else weights})"

    @property
    def tag(self) -> str:
        """A file-name-safe identifier for result files, unique per weights path."""
        tag = re.sub(r"[^A-Za-z0-9._-]+", "_", self.label).strip("_")
        paths = [p for p in (self.model, self.pretrained) if p and os.path.exists(p)]
        if paths:
            tag += "-" + hashlib.sha1("|".join(os.path.abspath(p) for p in paths).encode()).hexdigest()[:8]
        return tag

    @property
    def needs_quick_gelu(self) -> bool:
        """True when ``pretrained`` is a tag whose weights were trained with QuickGELU (OpenAI's) and the model's
        config builds GELU (``ViT-B-16`` + ``openai``): open_clip only warns and computes with the wrong activation."""
        if not self.pretrained or os.path.exists(self.pretrained) or os.path.isdir(self.model):
            return False
        try:
            spec = memclip.get_model_spec(self.model)
        except RuntimeError:
            return False
        tag = open_clip.get_pretrained_cfg(spec.teacher or spec.name, self.pretrained)
        return bool(tag.get("quick_gelu")) and not spec.model_cfg.get("quick_gelu", False)

    def identity(self) -> Dict[str, Any]:
        """What makes results reusable: the names, and the checkpoint file's size and time when it is a path (for an
        ``hf-hub:`` name, its snapshot in the Hub cache, named by commit)."""
        ident: Dict[str, Any] = {"model": self.model, "pretrained": self.pretrained, "text_tower": self.text_tower}
        if self.needs_quick_gelu:
            ident["force_quick_gelu"] = True
        for key in ("model", "pretrained"):
            path = getattr(self, key)
            if hub.has_schema(path):
                path = ident[f"{key}_folder"] = str(hub.resolve(path, weights=True).folder)
            if path and os.path.exists(path):
                target = path
                if os.path.isdir(path):
                    target = os.path.join(path, "open_clip_model.safetensors")
                if os.path.exists(target):
                    stat = os.stat(target)
                    ident[f"{key}_file"] = [os.path.abspath(target), stat.st_size, stat.st_mtime_ns]
        return ident


def _short_path(path: str) -> str:
    """'runs/x/teacher/final' -> 'teacher/final'; 'run/checkpoints/epoch_3.pt' -> 'run/epoch_3.pt'."""
    parts = os.path.normpath(path).split(os.sep)
    if len(parts) >= 3 and parts[-2] == "checkpoints":
        return f"{parts[-3]}/{parts[-1]}"
    if len(parts) >= 2 and parts[-1] in ("final", "model", "checkpoint"):
        return f"{parts[-2]}/{parts[-1]}"
    return parts[-1]


@dataclass
class LoadedModel:
    ref: ModelRef
    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable


def load_model(ref: ModelRef, device: torch.device) -> LoadedModel:
    """Build the model with its weights, eval mode. An OpenAI tag on a GELU config is built with QuickGELU, the
    activation those weights were trained with, and a warning says so."""
    pretrained = None if ref.pretrained in (None, "", "none", "random") else ref.pretrained
    quick_gelu = ref.needs_quick_gelu
    if quick_gelu:
        logger.warning("%s: the '%s' weights were trained with QuickGELU but the %s config builds GELU; evaluating "
                       "with QuickGELU (name the model %s-quickgelu to say so yourself)", ref.label, ref.pretrained,
                       ref.model, ref.model)
    model, _, preprocess = memclip.create_model_and_transforms(ref.model, pretrained=pretrained, device=device,
                                                               text_tower=ref.text_tower, force_quick_gelu=quick_gelu)
    model.eval()
    return LoadedModel(ref, model, preprocess, memclip.get_tokenizer(model.memclip_spec))
