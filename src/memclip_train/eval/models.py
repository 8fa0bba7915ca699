"""Loading the models to compare: (model, pretrained) pairs, their display names and cache identities."""
from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import open_clip
import torch

import memclip
from memclip import hub
from memclip.pretrained import file_sha256, shipped_record

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
        """What makes results reusable: the names, the model's config, and the weights' content: the sha256 of a
        weights file or saved folder (its weights and config), the recorded sha256 of weights that ship with memclip
        (which loading checks the file against), or the source of an open_clip tag. So weights replaced behind an
        unchanged path or tag are evaluated again. An ``hf-hub:`` name is read as its snapshot in the Hub cache, named
        by commit."""
        ident: Dict[str, Any] = {"model": self.model, "pretrained": self.pretrained, "text_tower": self.text_tower}
        if self.needs_quick_gelu:
            ident["force_quick_gelu"] = True
        for key in ("model", "pretrained"):
            path = getattr(self, key)
            if hub.has_schema(path):
                path = ident[f"{key}_folder"] = str(hub.resolve(path, weights=True).folder)
            if path and os.path.exists(path):
                ident[f"{key}_sha256"] = content_digest(path)
        spec = None
        if not os.path.isdir(self.model) and not hub.has_schema(self.model):
            try:
                spec = memclip.get_model_spec(self.model)
                ident["model_config"] = spec.to_config()
            except RuntimeError:  # an unknown name: loading it reports the error
                pass
        if spec is not None and self.pretrained and not os.path.exists(self.pretrained) \
                and not hub.has_schema(self.pretrained):
            record = shipped_record(spec.teacher or spec.name, self.pretrained)
            if record is not None:
                ident["pretrained_sha256"] = record["sha256"]
            else:
                tag = open_clip.get_pretrained_cfg(spec.teacher or spec.name, self.pretrained)
                ident["pretrained_source"] = {k: tag.get(k) for k in ("hf_hub", "url", "file") if tag.get(k)}
        return ident


_DIGESTS: Dict[Tuple[str, int, int, int, int], str] = {}
"""sha256 of files already hashed in this process, by (absolute path, inode, size, modification and change time):
a write or a rename changes the change time, which (unlike the modification time) cannot be set back."""


def _file_sha256(path: str) -> str:
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_sha256(Path(path))
    return _DIGESTS[key]


def content_digest(path: str) -> str:
    """sha256 of a weights file, or of a folder's weights and config files (``open_clip_model.safetensors`` and
    ``*.json``, by name), so a folder whose weights were replaced gets another digest."""
    if not os.path.isdir(path):
        return _file_sha256(path)
    digest = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        file = os.path.join(path, name)
        if os.path.isfile(file) and (name.endswith((".safetensors", ".json", ".pt", ".bin"))):
            digest.update(f"{name}:{_file_sha256(file)}\n".encode())
    return digest.hexdigest()


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
