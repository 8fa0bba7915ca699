"""The zero-shot classifier: class embeddings from prompts, through open_clip's ``build_zero_shot_classifier``."""
from __future__ import annotations

from typing import Callable

import torch
from open_clip import build_zero_shot_classifier
from tqdm import tqdm

from ..features import check_finite
from .dataset import ZeroShotSet

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
