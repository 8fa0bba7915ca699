"""`evaluate_segmentation`: run a predictor over a dataset, accumulate the confusion matrix, draw overlays."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np
from PIL import Image
from tqdm import tqdm

from .datasets import IGNORE, SegmentationSet
from .metrics import ConfusionMatrix
from .overlays import save_overlay


def evaluate_segmentation(dataset: SegmentationSet, predict: Callable[[Image.Image], np.ndarray],
                          overlays: Optional[Path] = None, num_overlays: int = 8, limit: Optional[int] = None,
                          progress: bool = True) -> Dict[str, Any]:
    """mIoU of ``predict`` (image -> (H, W) labels) over the dataset; overlay PNGs for the first ``num_overlays``.

    Returns:
        {"mIoU", "aAcc", "per_class_iou", "num_images", "seconds", "overlays": [paths],
         "image_accuracy": [per image, % of its labelled pixels predicted right (None when it has none)]}
    """
    matrix = ConfusionMatrix(len(dataset.class_names))
    written, accuracy = [], []
    count = len(dataset.items) if limit is None else min(limit, len(dataset.items))
    start = time.time()
    for index in tqdm(range(count), desc=f"{dataset.name} segmentation", unit="image", disable=not progress,
                      leave=False):
        image = Image.open(dataset.items[index][0]).convert("RGB")
        target = dataset.load_mask(index)
        prediction = predict(image)
        matrix.update(prediction, target)
        labelled = target != IGNORE
        accuracy.append(100.0 * float((prediction[labelled] == target[labelled]).mean()) if labelled.any() else None)
        if overlays is not None and index < num_overlays:
            path = Path(overlays) / f"{dataset.items[index][0].stem}.png"
            save_overlay(path, image, target, prediction, len(dataset.class_names))
            written.append(str(path))
    result = matrix.summary(dataset.class_names)
    result.update({"num_images": count, "seconds": time.time() - start, "overlays": written,
                   "image_accuracy": accuracy})
    return result
