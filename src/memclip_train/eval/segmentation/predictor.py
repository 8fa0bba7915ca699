"""Zero-shot segmentation with a CLIP model: class-name classifier, sliding windows, synonyms max-pooled."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import functional as TF

from ...image_modes import to_rgb
from ...retrieval_metrics import worst_for_nan
from ...features import check_finite
from .dense import dense_features


@torch.no_grad()
def class_classifier(model: torch.nn.Module, tokenizer: Callable, class_names: Sequence[str], device: torch.device,
                     templates: Optional[Sequence[str]] = None, batch_size: int = 512
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Text embeddings of every synonym, averaged over ``templates`` (default: the 80 OpenAI ImageNet templates).

    Returns:
        (queries (Q, D) normalised, query_to_class (Q,) int64): synonyms of one class share its index.
    """
    if templates is None:
        prompts_of = [lambda name, t=t: t(name) for t in open_clip.OPENAI_IMAGENET_TEMPLATES]
    else:
        prompts_of = [lambda name, t=t: t.format(name) for t in templates]
    queries, owners = [], []
    for index, entry in enumerate(class_names):
        for synonym in (s.strip() for s in entry.split(",") if s.strip()):
            prompts = [prompt(synonym) for prompt in prompts_of]
            features = torch.cat([
                F.normalize(model.encode_text(tokenizer(prompts[i:i + batch_size]).to(device)).float(), dim=-1)
                for i in range(0, len(prompts), batch_size)]).mean(0)
            queries.append(F.normalize(features, dim=0))
            owners.append(index)
    return torch.stack(queries), torch.tensor(owners, device=device)


@dataclass
class SlidingWindow:
    """The protocol's geometry: resize the short side, slide a window with a stride (pixels)."""

    window: int
    stride: int
    short_side: int

    @classmethod
    def for_model(cls, image_size: int, short_side_ratio: float) -> "SlidingWindow":
        """224 / 112 / 336 (448) for a 224 px model, scaled for other sizes (64 / 32 / 96 for a 64 px model)."""
        return cls(image_size, image_size // 2, int(round(image_size * short_side_ratio)))


class ClipSegmenter:
    """Predicts a label map for an image: dense features of each window, logits against the class queries,
    averaged over overlapping windows, resized to the image, logit scale, softmax, max over synonyms, argmax.

    The queries are the text tower's class embeddings, or ``classifier`` when given: ``(queries (Q, D),
    query_to_class (Q,))``, e.g. a linear probe's weights (see :mod:`.probe`).

    Raises:
        NonFiniteFeaturesError: the queries or an image's patch features hold NaN or infinity (naming ``model_name``).
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Callable, class_names: Sequence[str], method: str,
                 geometry: SlidingWindow, device: torch.device, autocast: Callable, logit_scale: float = 40.0,
                 templates: Optional[Sequence[str]] = None,
                 classifier: Optional[Tuple[torch.Tensor, torch.Tensor]] = None, model_name: str = ""):
        self.model = model
        self.method = method
        self.geometry = geometry
        self.device = device
        self.autocast = autocast
        self.logit_scale = logit_scale
        self.model_name = model_name
        cfg = open_clip.get_model_preprocess_cfg(model)
        self.mean = torch.tensor(cfg["mean"]).view(3, 1, 1)
        self.std = torch.tensor(cfg["std"]).view(3, 1, 1)
        self.num_classes = len(class_names)
        if classifier is not None:
            self.queries, self.owners = (t.to(device) for t in classifier)
        else:
            with autocast():
                self.queries, self.owners = class_classifier(model, tokenizer, class_names, device, templates)
        check_finite(self.queries.float().cpu(), model_name, "class",
                     lambda query: repr(class_names[int(self.owners[query])]))

    def _windows(self, height: int, width: int) -> List[Tuple[int, int, int, int]]:
        window, stride = self.geometry.window, self.geometry.stride
        rows = max(height - window + stride - 1, 0) // stride + 1
        cols = max(width - window + stride - 1, 0) // stride + 1
        boxes = []
        for r in range(rows):
            for c in range(cols):
                y2, x2 = min(r * stride + window, height), min(c * stride + window, width)
                boxes.append((max(y2 - window, 0), max(x2 - window, 0), y2, x2))
        return boxes

    @torch.no_grad()
    def logits(self, image: Image.Image) -> torch.Tensor:
        """Class-query logits (Q, H, W) at the image's original size (before the logit scale)."""
        width, height = image.size
        scale = self.geometry.short_side / min(width, height)
        resized = to_rgb(image).resize((max(1, round(width * scale)), max(1, round(height * scale))),
                                              Image.BICUBIC)
        pixels = (TF.to_tensor(resized) - self.mean) / self.std
        _, h, w = pixels.shape
        if min(h, w) < self.geometry.window:
            pixels = F.pad(pixels, (0, max(0, self.geometry.window - w), 0, max(0, self.geometry.window - h)))
        _, h_pad, w_pad = pixels.shape
        boxes = self._windows(h_pad, w_pad)
        crops = torch.stack([pixels[:, y1:y2, x1:x2] for y1, x1, y2, x2 in boxes]).to(self.device)
        with self.autocast():
            features = dense_features(self.model.visual, crops, self.method)
        check_finite(features.cpu(), self.model_name, "patch",
                     lambda crop: f"the window (y1, x1, y2, x2) = {boxes[crop]}")
        crop_logits = torch.einsum("bhwd,qd->bqhw", features.float(), self.queries.float())
        crop_logits = F.interpolate(crop_logits, size=(self.geometry.window, self.geometry.window), mode="bilinear",
                                    align_corners=False)
        total = torch.zeros(len(self.queries), h_pad, w_pad, device=self.device)
        count = torch.zeros(1, h_pad, w_pad, device=self.device)
        for (y1, x1, y2, x2), logit in zip(boxes, crop_logits):
            total[:, y1:y2, x1:x2] += logit[:, :y2 - y1, :x2 - x1]
            count[:, y1:y2, x1:x2] += 1
        averaged = (total / count)[:, :h, :w]
        return F.interpolate(averaged[None], size=(height, width), mode="bilinear", align_corners=False)[0]

    def class_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(Q, H, W) logits -> (C, H, W): softmax over queries at the logit scale, max over each class's synonyms.
        A NaN logit is the worst score (-inf, probability 0), so argmax never picks it."""
        probabilities = worst_for_nan((worst_for_nan(logits) * self.logit_scale).softmax(0))
        out = torch.full((self.num_classes,) + tuple(logits.shape[1:]), float("-inf"), device=logits.device)
        for query, owner in enumerate(self.owners.tolist()):
            out[owner] = torch.maximum(out[owner], probabilities[query])
        return out

    def __call__(self, image: Image.Image) -> np.ndarray:
        """The predicted label map (H, W) int64."""
        return self.class_probabilities(self.logits(image)).argmax(0).cpu().numpy()
