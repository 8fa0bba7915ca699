"""Metrics that fit the synthetic world, read from its scene graphs (:mod:`..zeroshot.synth_scenes`).

A short caption names one object ("a large red star on a grey background"), so many images satisfy it and exact-image
recall is capped by ambiguity. **Semantic retrieval** counts a short-caption query as a hit at k when one of the top
k images satisfies every attribute the caption states (an object of that size, fill, colour and shape, on that
background). :func:`zeroshot_breakdown` splits a zero-shot result on the world (``synth-shapes``, ...) by how the
image shows the captioned object.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import torch

from memclip.errors import InputError

from ..retrieval_metrics import worst_for_nan
from ..zeroshot.synth_scenes import SALIENCE_GROUPS, SynthScenes


def short_claims(scene: Mapping[str, Any]) -> Dict[str, str]:
    """What a scene's short caption states: the salient object's size, fill, colour and shape, and the background."""
    obj = scene["objects"][scene["salient"]]
    return {"size": obj["size"], "fill": obj["fill"], "colour": obj["colour"], "shape": obj["shape"],
            "background": scene["background"]}


def satisfies(scene: Mapping[str, Any], claims: Mapping[str, str]) -> bool:
    """Whether ``scene`` has ``claims["background"]`` and one object with every other claimed attribute."""
    if scene["background"] != claims["background"]:
        return False
    wanted = {k: v for k, v in claims.items() if k != "background"}
    return any(all(obj[k] == v for k, v in wanted.items()) for obj in scene["objects"])


def semantic_hits(similarity: torch.Tensor, scenes: Sequence[Mapping[str, Any]], ks: Sequence[int] = (1, 5)
                  ) -> Dict[int, List[bool]]:
    """For each short-caption query (row i describes image i), whether a top-k image satisfies it.

    Args:
        similarity: (Q, N) text-image similarities, query i being image i's short caption.
        scenes: the N images' scene graphs.
    Returns:
        {k: [hit of query 0, hit of query 1, ...]}; a NaN similarity is the worst score.
    """
    top = worst_for_nan(similarity).topk(max(ks), dim=1).indices.tolist()
    hits: Dict[int, List[bool]] = {k: [] for k in ks}
    for query, ranked in enumerate(top):
        claims = short_claims(scenes[query])
        good = [satisfies(scenes[j], claims) for j in ranked]
        for k in ks:
            hits[k].append(any(good[:k]))
    return hits


def synth_semantic_results(image_features: torch.Tensor, short_features: torch.Tensor, scenes: SynthScenes
                           ) -> Dict[str, Any]:
    """Semantic short-caption T2I R@1/5, with per-query hits for bootstrap intervals.

    Args:
        image_features: (N, D) normalised features of the N retrieval images.
        short_features: (N, D) normalised features of each image's own short caption.
    """
    if len(image_features) != len(scenes.scenes):
        raise InputError(f"{len(image_features)} image features for {len(scenes.scenes)} scene graphs")
    hits = semantic_hits(short_features @ image_features.T, scenes.scenes)
    return {"metrics": {f"semantic_t2i_R@{k}": 100.0 * sum(v) / len(v) for k, v in hits.items()},
            "num_images": len(scenes.scenes), "hits": {f"semantic_t2i_R@{k}": v for k, v in hits.items()}}


def evaluate_synth_semantics(encode_texts: Callable[[Sequence[str]], torch.Tensor], image_features: torch.Tensor,
                             short_captions: Sequence[str], scenes: SynthScenes) -> Dict[str, Any]:
    """:func:`synth_semantic_results` for a model whose ``encode_texts`` maps texts to (len, D) normalised features.

    Args:
        image_features: (N, D) normalised features of the retrieval images, in index order.
        short_captions: each image's own short caption, in index order.
    """
    return synth_semantic_results(image_features, encode_texts(short_captions), scenes)


def zeroshot_breakdown(result: Mapping[str, Any], scenes: SynthScenes, attribute: str, top: int = 3
                       ) -> Dict[str, Any]:
    """Where a zero-shot result on the salient objects' ``attribute`` succeeds and fails.

    Args:
        result: :func:`..zeroshot.evaluate.evaluate_zeroshot`'s output on ``synth-{attribute}s``: ``ranks`` (and
            ``predictions``, absent from results written before they were stored), one per retrieval image.
        scenes: the world's scene graphs, in the same order.
        top: how many confusions to return.
    Returns:
        {"by_salience": {group: {"top1": %, "images": n}} over the groups present (:data:`SALIENCE_GROUPS`),
         "confusions": [[true value, predicted value, images], ...] most frequent first (empty without
         predictions)}.
    Raises:
        ValueError: the result does not hold one rank per scene (images were skipped).
    """
    ranks = result["ranks"]
    if len(ranks) != len(scenes.scenes):
        raise InputError(f"{len(ranks)} zero-shot ranks for {len(scenes.scenes)} scene graphs (skipped images?)")
    hits: Dict[str, List[bool]] = {group: [] for group in SALIENCE_GROUPS}
    for index, rank in enumerate(ranks):
        hits[scenes.salience(index)].append(rank == 0)
    by_salience = {group: {"top1": 100.0 * sum(h) / len(h), "images": len(h)} for group, h in hits.items() if h}
    counts: Dict[Tuple[str, str], int] = {}
    classes = scenes.values(attribute)
    for index, predicted in enumerate(result.get("predictions", [])):
        truth = scenes.salient(index)[attribute]
        if classes[predicted] != truth:
            pair = (truth, classes[predicted])
            counts[pair] = counts.get(pair, 0) + 1
    confusions = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
    return {"by_salience": by_salience, "confusions": [[t, p, n] for (t, p), n in confusions]}
