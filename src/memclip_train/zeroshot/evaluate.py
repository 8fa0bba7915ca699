"""Zero-shot classification of a dataset: encode its images, score them against the class embeddings
(:mod:`.classifier`), and report the accuracy (:mod:`.accuracy`) with every image's rank and top-1 prediction."""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional

import torch

from ..features import describe_image, encode_images
from ..retrieval_metrics import worst_for_nan
from .accuracy import accuracy_metrics, clip_benchmark_accuracy, true_class_ranks
from .classifier import build_classifier
from .dataset import ZeroShotSet

logger = logging.getLogger(__name__)


def evaluate_zeroshot(model: torch.nn.Module, preprocess: Callable, tokenizer: Callable, dataset: ZeroShotSet,
                      device: torch.device, autocast: Callable, batch_size: int = 64, workers: int = 0,
                      skip_bad: bool = False, progress: bool = True,
                      classifier: Optional[torch.Tensor] = None, model_name: str = "") -> Dict[str, Any]:
    """Classify every image of ``dataset`` by cosine similarity to its class embeddings.

    Args:
        classifier: (D, C) class embeddings to reuse (e.g. ImageNet's for ImageNet-V2); built from the prompts when
            None.
        model_name: how errors name the model (a non-finite feature is an error, see
            :func:`..features.check_finite`).
    Returns:
        {"metrics": {"top1", "top5", "mean_per_class_top1", ... in %; clip_benchmark's "acc1", "acc5",
         "mean_per_class_recall" as fractions}, "num_images", "num_classes", "prompts", "context_length", "meta",
         "images_per_second", "skipped_images", "bad_items", "skipped" (what ``skip_bad`` left out, by kind, and the
         total), "ranks": [rank of the true class],
         "predictions": [index of the top-1 class]}, one entry per kept image
    """
    was_training = model.training
    model.eval()
    try:
        if classifier is None:
            classifier = build_classifier(model, tokenizer, dataset, device, autocast, progress, model_name)
        images = encode_images(model, preprocess, dataset.images, device, autocast, batch_size, workers, skip_bad,
                               progress, desc=f"{dataset.name} images", model_name=model_name)
    finally:
        model.train(was_training)
    kept = set(images.kept)
    missing = [index for index in range(len(dataset.images)) if index not in kept]  # in the order of images.bad
    skipped: List[List[str]] = [[describe_image(source, index), message]
                                for index, (source, message) in zip(missing, images.bad)]
    if images.bad:
        logger.warning("%s: skipped %d unreadable images (--skip-bad), e.g. %s", dataset.name, len(images.bad),
                       skipped[0][0])
        dataset = dataset.subset(images.kept)
    labels = torch.tensor(dataset.labels)
    logits = images.features @ classifier
    ranks = true_class_ranks(logits, labels)
    return {
        "metrics": {**accuracy_metrics(ranks, labels, dataset.num_classes),
                    **clip_benchmark_accuracy(logits, labels, dataset.num_classes)},
        "num_images": len(dataset.images),
        "num_classes": dataset.num_classes,
        "prompts": dataset.prompts_name,
        "context_length": getattr(tokenizer, "context_length", None),
        "meta": dataset.meta,
        "images_per_second": images.images_per_second,
        "skipped_images": skipped,
        "bad_items": [str(item) for item in dataset.bad_items],
        "skipped": {"unreadable_images": len(skipped), "bad_items": len(dataset.bad_items),
                    "total": len(skipped) + len(dataset.bad_items)},
        "ranks": ranks.tolist(),
        "predictions": worst_for_nan(logits).argmax(dim=1).tolist(),
    }
