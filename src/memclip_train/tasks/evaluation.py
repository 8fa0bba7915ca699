"""Validation helpers shared by the tasks: features over a loader, and retrieval metrics on them."""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.shard_stream import NoSamplesError
from ..retrieval_metrics import retrieval_metrics


@torch.no_grad()
def encode_batches(model: nn.Module, loader: Iterable[Dict[str, torch.Tensor]], autocast: Callable,
                   device: torch.device, image: bool = True, roles: Sequence[str] = ("text",)
                   ) -> Dict[str, torch.Tensor]:
    """L2-normalised features of every batch: {"image": (N, D), role: (N, D)}, on the CPU in float32.

    Raises:
        NoSamplesError: the loader yielded no batch (every sample skipped; the skips were logged as they happened).
    """
    model.eval()
    chunks: Dict[str, list] = {name: [] for name in (["image"] if image else []) + list(roles)}
    batches = 0
    for batches, batch in enumerate(loader, 1):
        with autocast():
            if image:
                chunks["image"].append(model.encode_image(batch["image"].to(device), normalize=True).float().cpu())
            for role in roles:
                chunks[role].append(model.encode_text(batch[role].to(device), normalize=True).float().cpu())
    if not batches:
        raise NoSamplesError("the validation data yielded no usable sample (see the skipped samples logged above)")
    return {name: torch.cat(parts) for name, parts in chunks.items() if parts}


def paired_retrieval(image_features: torch.Tensor, text_features: torch.Tensor, prefix: str) -> Dict[str, float]:
    """R@1/5/10 (%) and mean/median ranks both ways for one caption per image, keys like ``{prefix}_t2i_R@1`` (what
    open_clip_train's validation reports, see :mod:`memclip_train.results_jsonl`)."""
    metrics = retrieval_metrics(image_features, text_features, torch.arange(len(text_features)), ks=(1, 5, 10))
    return {f"{prefix}_{k}": v for k, v in metrics.items() if k not in ("num_images", "num_texts")}


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.float(), b.float(), dim=-1).mean().item()
