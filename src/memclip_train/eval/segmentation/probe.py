"""A linear probe on the dense features: how much of each class the patches carry, whether or not the text reads it.

Zero-shot segmentation scores a model's patch features against its text tower's class embeddings, so a low mIoU
cannot tell patches that lack the class from a text side that does not read it. The probe separates the two: a
linear classifier (no bias) is fitted on the dense features (one method, e.g. ``sclip``) of a second labelled set of
the same dataset, and its weights then take the place of the text queries in :class:`ClipSegmenter`. It is scored by
exactly the zero-shot protocol (windows, resizing, mIoU over the labelled pixels), so the gap between the two
figures is what the text side leaves unread.

The probe sees each training image once, resized to the model's input size, with its mask resized (nearest) to
match; a patch is labelled with the class that covers most of it when that class covers at least ``min_share`` of
it, else it is left out. On the synthetic world (images at the model's size) that is the view the protocol scores;
on larger benchmark images the protocol slides windows over a resized image instead, so the probe is fitted on a
coarser view than it is scored on.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import functional as TF

from memclip.errors import InputError

from ...image_modes import to_rgb
from ...features import check_finite
from .datasets import IGNORE, SegmentationSet
from .dense import dense_features

FEATURE_SCALE = 10.0
"""Features are L2-normalised; the probe is fitted on ``FEATURE_SCALE * features`` so that AdamW at a fixed rate
reaches confident logits, and its returned weights include the factor."""


def patch_labels(mask: np.ndarray, grid: Tuple[int, int], min_share: float = 0.25) -> np.ndarray:
    """mask (H, W) int64 (``IGNORE`` unlabelled; H, W divisible by the grid) -> (gh, gw) int64: the class covering
    most of each patch, or -1 where no class covers ``min_share`` of it."""
    rows, cols = grid
    height, width = mask.shape
    if height % rows or width % cols:
        raise InputError(f"a {height}x{width} mask does not split into a {rows}x{cols} grid")
    cells = mask.reshape(rows, height // rows, cols, width // cols).transpose(0, 2, 1, 3).reshape(rows, cols, -1)
    labels = np.full((rows, cols), -1, dtype=np.int64)
    for r in range(rows):
        for c in range(cols):
            values, counts = np.unique(cells[r, c][cells[r, c] != IGNORE], return_counts=True)
            if len(values) and counts.max() >= min_share * cells.shape[-1]:
                labels[r, c] = values[counts.argmax()]
    return labels


@torch.no_grad()
def probe_training_set(model: torch.nn.Module, dataset: SegmentationSet, method: str, device: torch.device,
                       autocast: Callable, min_share: float = 0.25, batch_size: int = 64,
                       limit: Optional[int] = None, model_name: str = "") -> Tuple[torch.Tensor, torch.Tensor]:
    """Labelled patch features of ``dataset``: (features (P, D) L2-normalised, labels (P,) int64).

    Raises:
        NonFiniteFeaturesError: the model (``model_name``) gives NaN or infinite patch features.
    """
    size = model.visual.image_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    cfg = open_clip.get_model_preprocess_cfg(model)
    mean, std = torch.tensor(cfg["mean"]).view(3, 1, 1), torch.tensor(cfg["std"]).view(3, 1, 1)
    count = len(dataset.items) if limit is None else min(limit, len(dataset.items))
    features, labels = [], []
    for start in range(0, count, batch_size):
        indices = range(start, min(start + batch_size, count))
        pixels = torch.stack([(TF.to_tensor(to_rgb(Image.open(dataset.items[i][0]))
                                            .resize(size[::-1], Image.BICUBIC)) - mean) / std for i in indices])
        with autocast():
            dense = dense_features(model.visual, pixels.to(device), method).float().cpu()
        check_finite(dense, model_name, "patch", lambda row: str(dataset.items[indices[row]][0]))
        grid = tuple(dense.shape[1:3])
        for row, index in enumerate(indices):
            mask = np.asarray(Image.fromarray(dataset.load_mask(index).astype(np.uint8))
                              .resize(size[::-1], Image.NEAREST), dtype=np.int64)
            target = torch.from_numpy(patch_labels(mask, grid, min_share))
            keep = target >= 0
            features.append(dense[row][keep])
            labels.append(target[keep])
    if not features or sum(len(t) for t in labels) == 0:
        raise InputError(f"{dataset.name}: no labelled patches to fit the probe on")
    return torch.cat(features), torch.cat(labels)


def fit_linear_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, steps: int = 500,
                     lr: float = 1e-2, weight_decay: float = 1e-4, seed: int = 0) -> torch.Tensor:
    """Multinomial logistic regression without bias, full batch, AdamW.

    Args:
        features: (P, D) L2-normalised patch features; labels: (P,) int64 in [0, num_classes).
    Returns:
        weights (num_classes, D): class logits are ``features @ weights.T``.
    """
    generator = torch.Generator().manual_seed(seed)
    weights = (torch.randn(num_classes, features.shape[1], generator=generator) * 0.01).requires_grad_()
    optimizer = torch.optim.AdamW([weights], lr=lr, weight_decay=weight_decay)
    scaled = features.float() * FEATURE_SCALE
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(scaled @ weights.T, labels).backward()
        optimizer.step()
    return weights.detach() * FEATURE_SCALE
