"""Zero-shot classification: class embeddings from prompts (open_clip's ``build_zero_shot_classifier``), then
top-1/top-5 accuracy and the rank of each image's true class."""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional

import torch
from open_clip import build_zero_shot_classifier
from tqdm import tqdm

from ..retrieval_metrics import worst_for_nan
from .features import check_finite, describe_image, encode_images
from .zeroshot_sets import ZeroShotSet

logger = logging.getLogger(__name__)

CLASSES_PER_BATCH = 10
"""Classes whose prompts go through the text tower together (open_clip_train's setting)."""


def _constant(prompt: str) -> Callable[[str], str]:
    return lambda _name: prompt


@torch.no_grad()
def build_classifier(model: torch.nn.Module, tokenizer: Callable, dataset: ZeroShotSet, device: torch.device,
                     autocast: Callable, progress: bool = True, model_name: str = "") -> torch.Tensor:
    """(D, C) float32 class embeddings on the CPU: per class, the normalised mean of its normalised prompt embeddings.

    Shared templates go to open_clip's ``build_zero_shot_classifier`` as they are; per-class prompts go class by
    class, each prompt as a template that ignores the class name.

    Raises:
        NonFiniteFeaturesError: a class embedding holds NaN or infinity (the message names ``model_name``).
    """
    with autocast():
        if dataset.templates is not None:
            weights = build_zero_shot_classifier(model, tokenizer, dataset.class_names, dataset.templates,
                                                 CLASSES_PER_BATCH, device, use_tqdm=progress)
        else:
            columns = [build_zero_shot_classifier(model, tokenizer, [name], [_constant(p) for p in prompts],
                                                  None, device)
                       for name, prompts in tqdm(zip(dataset.class_names, dataset.class_prompts), disable=not progress,
                                                 total=dataset.num_classes, desc=f"{dataset.name} classes",
                                                 leave=False)]
            weights = torch.cat(columns, dim=1)
    weights = weights.float().cpu()
    check_finite(weights.T, model_name, "class", lambda column: repr(dataset.class_names[column]))
    return weights


def true_class_ranks(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N,) rank of each image's true class among the (N, C) scores: 0 = top-1 (ties count in the image's favour).

    NaN is the worst score: a true class scored NaN ranks last (C - 1), a NaN competitor behind the true class.
    """
    true = logits.gather(1, labels[:, None])
    ranks = (worst_for_nan(logits) > worst_for_nan(true)).sum(dim=1)
    return torch.where(true[:, 0].isnan(), logits.shape[1] - 1, ranks)


def accuracy_metrics(ranks: torch.Tensor, labels: torch.Tensor, num_classes: int) -> Dict[str, float]:
    """top-1, top-5 and mean per-class top-1 accuracy in %, from the ranks of the true classes."""
    hits = (ranks == 0).float()
    present = labels.unique()
    per_class = torch.stack([hits[labels == c].mean() for c in present])
    return {"top1": 100 * hits.mean().item(), "top5": 100 * (ranks < 5).float().mean().item(),
            "mean_per_class_top1": 100 * per_class.mean().item(), "classes_present": int(len(present)),
            "num_classes": num_classes}


def clip_benchmark_accuracy(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> Dict[str, float]:
    """Accuracy under clip_benchmark's names, as fractions, as its ``zeroshot_classification.evaluate`` computes
    them: ``acc1``, ``acc5`` (NaN with fewer than 5 classes) and ``mean_per_class_recall`` (the top-1 prediction's
    recall averaged over the classes present)."""
    predictions = logits.argmax(dim=1)
    top5 = logits.topk(min(5, num_classes), dim=1).indices
    recalls = torch.stack([(predictions[labels == c] == c).float().mean() for c in labels.unique()])
    return {"acc1": (predictions == labels).float().mean().item(),
            "acc5": (top5 == labels[:, None]).any(dim=1).float().mean().item() if num_classes >= 5 else float("nan"),
            "mean_per_class_recall": recalls.mean().item()}


def evaluate_zeroshot(model: torch.nn.Module, preprocess: Callable, tokenizer: Callable, dataset: ZeroShotSet,
                      device: torch.device, autocast: Callable, batch_size: int = 64, workers: int = 0,
                      skip_bad: bool = False, progress: bool = True,
                      classifier: Optional[torch.Tensor] = None, model_name: str = "") -> Dict[str, Any]:
    """Classify every image of ``dataset`` by cosine similarity to its class embeddings.

    Args:
        classifier: (D, C) class embeddings to reuse (e.g. ImageNet's for ImageNet-V2); built from the prompts when
            None.
        model_name: how errors name the model (a non-finite feature is an error, see :func:`.features.check_finite`).
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
