"""mIoU from a confusion matrix (ignore index 255), as mmseg computes it."""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

from memclip.errors import InputError

IGNORE = 255


class ConfusionMatrix:
    """Accumulates (ground truth, prediction) pixel counts over a dataset."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, prediction: np.ndarray, target: np.ndarray) -> None:
        """Add one image: (H, W) integer maps; target pixels equal to 255 are ignored."""
        if prediction.shape != target.shape:
            raise InputError(f"prediction {prediction.shape} and target {target.shape} differ in shape")
        keep = target != IGNORE
        if (target[keep] >= self.num_classes).any() or (target[keep] < 0).any():
            raise InputError(f"target labels outside 0..{self.num_classes - 1} (and 255)")
        index = target[keep].astype(np.int64) * self.num_classes + prediction[keep].astype(np.int64)
        self.matrix += np.bincount(index, minlength=self.num_classes ** 2).reshape(self.num_classes,
                                                                                    self.num_classes)

    def summary(self, class_names: Sequence[str]) -> Dict[str, object]:
        """mIoU (%, the mean over classes present in the ground truth or the prediction), per-class IoU, aAcc."""
        intersection = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - intersection
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, intersection / union, np.nan)
        total = self.matrix.sum()
        return {
            "mIoU": float(np.nanmean(iou) * 100) if np.isfinite(iou).any() else float("nan"),
            "aAcc": float(intersection.sum() / total * 100) if total else float("nan"),
            "per_class_iou": {name.split(",")[0]: (None if np.isnan(v) else float(v * 100))
                              for name, v in zip(class_names, iou)},
        }
