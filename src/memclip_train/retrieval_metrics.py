"""Image-text retrieval metrics: recall@k and ranks in both directions, for one or several captions per image.

T2I (text -> image): each caption's query ranks all images; R@k counts captions whose true image is in the top k.
I2T (image -> text): each image's query ranks all captions; R@k counts images with *any* of their captions in the
top k (CLIP_benchmark, FLAIR). Mean and median ranks are 1-based: rank 1 is a perfect hit.

A NaN score is the worst score: a true candidate scored NaN ranks behind every other candidate, and a NaN competitor
behind the true one. (Every comparison with NaN is false, so without this a model whose features are all NaN would
rank every query first.) The eval program refuses non-finite features before they get here; the rule keeps any other
caller honest.
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch

from memclip.errors import InputError

DEFAULT_KS = (1, 5, 10)


def worst_for_nan(scores: torch.Tensor) -> torch.Tensor:
    """``scores`` with NaN replaced by -inf, the worst score, so that comparisons and argmax/topk rank it last."""
    return scores.nan_to_num(nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))


def _ranks_of_true(similarity: torch.Tensor, is_true: torch.Tensor) -> torch.Tensor:
    """1-based rank of the best-ranked true candidate in each row: (Q, C) scores, (Q, C) bool -> (Q,) int64.

    Ties count against the query: a candidate with a score equal to the true one's ranks ahead of it. NaN is the
    worst score (a NaN true score ties with NaN competitors, so it ranks last).
    """
    similarity = worst_for_nan(similarity)
    best_true = similarity.masked_fill(~is_true, float("-inf")).max(dim=1, keepdim=True).values
    return ((similarity >= best_true) & ~is_true).sum(dim=1) + 1


@torch.no_grad()
def query_ranks(image_features: torch.Tensor, text_features: torch.Tensor, text_to_image: torch.Tensor,
                chunk_size: int = 4096) -> Dict[str, torch.Tensor]:
    """1-based rank of the true match for every query: {"t2i": (T,) per caption, "i2t": (I,) per image}.

    Raises:
        ValueError: shapes disagree, an index is out of range, or an image has no caption.
    """
    image_features = image_features.float()
    text_features = text_features.float()
    text_to_image = text_to_image.long().to(image_features.device)
    num_images, num_texts = image_features.shape[0], text_features.shape[0]
    if text_to_image.shape != (num_texts,):
        raise InputError(f"text_to_image must be ({num_texts},), got {tuple(text_to_image.shape)}")
    if num_texts and (text_to_image.min() < 0 or text_to_image.max() >= num_images):
        raise InputError("text_to_image holds indices outside the image set")
    if num_images and torch.bincount(text_to_image, minlength=num_images).min() == 0:
        raise InputError("every image needs at least one caption")
    t2i_ranks = []
    for start in range(0, num_texts, chunk_size):
        similarity = text_features[start:start + chunk_size] @ image_features.T
        is_true = torch.zeros_like(similarity, dtype=torch.bool)
        is_true[torch.arange(similarity.shape[0]), text_to_image[start:start + chunk_size]] = True
        t2i_ranks.append(_ranks_of_true(similarity, is_true))
    i2t_ranks = []
    for start in range(0, num_images, chunk_size):
        similarity = image_features[start:start + chunk_size] @ text_features.T
        image_ids = torch.arange(start, start + similarity.shape[0], device=similarity.device)
        is_true = text_to_image.unsqueeze(0) == image_ids.unsqueeze(1)
        i2t_ranks.append(_ranks_of_true(similarity, is_true))
    return {"t2i": torch.cat(t2i_ranks).cpu(), "i2t": torch.cat(i2t_ranks).cpu()}


def metrics_from_ranks(ranks: Dict[str, torch.Tensor], ks: Sequence[int] = DEFAULT_KS) -> Dict[str, float]:
    """Recall@k (%) and mean/median rank from per-query ranks."""
    results: Dict[str, float] = {"num_images": len(ranks["i2t"]), "num_texts": len(ranks["t2i"])}
    for direction in ("t2i", "i2t"):
        values = torch.as_tensor(ranks[direction])
        for k in ks:
            results[f"{direction}_R@{k}"] = 100.0 * (values <= k).float().mean().item()
        results[f"{direction}_mean_rank"] = values.float().mean().item()
        results[f"{direction}_median_rank"] = values.float().median().item()
    return results


def clip_benchmark_retrieval_metrics(ranks: Dict[str, torch.Tensor], ks: Sequence[int] = DEFAULT_KS
                                     ) -> Dict[str, float]:
    """Recall@k under clip_benchmark's names, as fractions, from per-query ranks.

    clip_benchmark names a direction by what is retrieved: ``image_retrieval_recall@k`` is text -> image (each
    caption finds its image among the top k images: our ``t2i_R@k`` / 100) and ``text_retrieval_recall@k`` image ->
    text (an image with any of its captions in the top k: ``i2t_R@k`` / 100), as its ``zeroshot_retrieval.evaluate``
    computes them.
    """
    metrics = {}
    for k in ks:
        metrics[f"image_retrieval_recall@{k}"] = (torch.as_tensor(ranks["t2i"]) <= k).float().mean().item()
        metrics[f"text_retrieval_recall@{k}"] = (torch.as_tensor(ranks["i2t"]) <= k).float().mean().item()
    return metrics


@torch.no_grad()
def retrieval_metrics(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    chunk_size: int = 4096,
) -> Dict[str, float]:
    """Recall@k and mean/median ranks for both directions.

    Args:
        image_features: (I, D) image embeddings (normalised, or the similarity is not cosine).
        text_features: (T, D) caption embeddings.
        text_to_image: (T,) int64, the index of each caption's image in ``image_features``.
        ks: the k of each recall@k.
        chunk_size: queries scored at a time, to bound memory on large sets.
    Returns:
        ``{"t2i_R@1": %, ..., "i2t_R@1": %, ..., "t2i_mean_rank", "t2i_median_rank", "i2t_mean_rank",
        "i2t_median_rank", "num_images", "num_texts"}``; recalls in percent.
    """
    return metrics_from_ranks(query_ranks(image_features, text_features, text_to_image, chunk_size), ks)
