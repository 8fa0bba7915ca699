"""`evaluate_segmentation`: run a predictor over a dataset, accumulate the confusion matrix, draw overlays."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from ...image_modes import to_rgb
from ...features import BadImageError, NonFiniteFeaturesError
from .datasets import IGNORE, SegmentationSet
from .metrics import ConfusionMatrix
from .overlays import save_overlay

logger = logging.getLogger(__name__)


def _read_item(dataset: SegmentationSet, index: int) -> Tuple[Image.Image, np.ndarray]:
    """The image (RGB, 16-bit scaled) and its label map; :class:`BadImageError` naming the file that cannot be used:
    an image or mask that does not decode, a mask of another size than its image, or labels outside the classes."""
    image_path, mask_path = dataset.items[index]
    try:
        with Image.open(image_path) as opened:
            image = to_rgb(opened)
    except Exception as error:  # missing, truncated or undecodable files fail in many ways inside PIL
        raise BadImageError(f"cannot read image {image_path} ({type(error).__name__}: {error})") from error
    try:
        target = dataset.load_mask(index)
    except Exception as error:
        raise BadImageError(f"cannot read mask {mask_path} ({type(error).__name__}: {error})") from error
    if target.ndim != 2:
        raise BadImageError(f"mask {mask_path} is a {target.ndim}-D array (a colour picture?), not one label per "
                            "pixel (a palette or grayscale PNG)")
    if target.shape != (image.size[1], image.size[0]):
        raise BadImageError(f"mask {mask_path} is {target.shape[1]}x{target.shape[0]} but its image "
                            f"{image_path.name} is {image.size[0]}x{image.size[1]}: a label map has one label per "
                            "pixel of its image")
    labelled = target[target != IGNORE]
    outside = labelled[(labelled < 0) | (labelled >= len(dataset.class_names))]
    if outside.size:
        raise BadImageError(f"mask {mask_path} holds label {int(outside[0])} outside the {len(dataset.class_names)} "
                            f"classes of {dataset.name} (and {IGNORE}, ignored), after its label reduction")
    return image, target


def evaluate_segmentation(dataset: SegmentationSet, predict: Callable[[Image.Image], np.ndarray],
                          overlays: Optional[Path] = None, num_overlays: int = 8, limit: Optional[int] = None,
                          progress: bool = True, skip_bad: bool = False) -> Dict[str, Any]:
    """mIoU of ``predict`` (image -> (H, W) labels) over the dataset; overlay PNGs for the first ``num_overlays``.

    Returns:
        {"mIoU", "aAcc", "per_class_iou", "num_images", "seconds", "overlays": [paths],
         "image_accuracy": [per scored image, % of its labelled pixels predicted right (None when it has none)],
         "skipped_images": [[file, reason], ...] (only with ``skip_bad``)}
    Raises:
        BadImageError: an image or mask that cannot be used (see :func:`_read_item`) and ``skip_bad`` is off, or no
            image has a labelled pixel (the mIoU would be undefined).
        NonFiniteFeaturesError: the model gives NaN or infinite features (the message names the image).
    """
    matrix = ConfusionMatrix(len(dataset.class_names))
    written, accuracy, skipped = [], [], []
    count = len(dataset.items) if limit is None else min(limit, len(dataset.items))
    start = time.time()
    for index in tqdm(range(count), desc=f"{dataset.name} segmentation", unit="image", disable=not progress,
                      leave=False):
        try:
            image, target = _read_item(dataset, index)
        except BadImageError as error:
            if not skip_bad:
                raise BadImageError(f"{error}; fix the file or pass --skip-bad") from error
            skipped.append([str(dataset.items[index][0]), str(error)])
            continue
        try:
            prediction = predict(image)
        except NonFiniteFeaturesError as error:
            raise NonFiniteFeaturesError(f"{error} (on {dataset.items[index][0]})") from error
        matrix.update(prediction, target)
        labelled = target != IGNORE
        accuracy.append(100.0 * float((prediction[labelled] == target[labelled]).mean()) if labelled.any() else None)
        if overlays is not None and len(written) < num_overlays:
            path = Path(overlays) / f"{dataset.items[index][0].stem}.png"
            save_overlay(path, image, target, prediction, len(dataset.class_names))
            written.append(str(path))
    if skipped:
        logger.warning("%s: skipped %d unusable images or masks (--skip-bad), e.g. %s", dataset.name, len(skipped),
                       skipped[0][1])
    if not matrix.matrix.sum():
        raise BadImageError(f"{dataset.name}: none of the {count - len(skipped)} images scored has a labelled pixel "
                            f"(every mask pixel is {IGNORE}, ignored{', or skipped' if skipped else ''}): the mIoU is "
                            f"undefined; e.g. {dataset.items[0][1]}")
    result = matrix.summary(dataset.class_names)
    result.update({"num_images": count - len(skipped), "seconds": time.time() - start, "overlays": written,
                   "image_accuracy": accuracy, "skipped_images": skipped,
                   "skipped": {"images": len(skipped), "total": len(skipped)}})
    return result
