"""MMVP-style blind pairs: two images that differ in one attribute, each with its caption.

A pair counts as solved only if each image ranks its own caption above the other one (image -> text), and, in the
other direction, each caption ranks its own image first (text -> image). A model blind to the difference scores 0
(its two images agree on which caption fits better), so this is stricter than the per-image score ("i2t_single":
the share of single images that prefer their own caption, 50 for a blind model), which is reported too.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch

from .features import encode_images, encode_texts
from .models import LoadedModel
from .retrieval_sets.base import LayoutError, read_jsonl

PAIRS_LAYOUT = """    <world>/pairs/pairs.jsonl   {"id", "pattern", "a": {"image", "caption", "short"}, "b": {...}} per line
    <world>/pairs/images/<id>_a.jpg, <id>_b.jpg"""


def load_pairs(root: Path) -> List[Dict[str, Any]]:
    folder = root / "pairs" if (root / "pairs").is_dir() else root
    rows = read_jsonl("pairs", folder / "pairs.jsonl", PAIRS_LAYOUT)
    for row in rows:
        if not {"pattern", "a", "b"} <= set(row):
            raise LayoutError("pairs", folder / "pairs.jsonl", PAIRS_LAYOUT, "a row lacks pattern/a/b in")
        for side in ("a", "b"):
            row[side] = dict(row[side], image=str(folder / row[side]["image"]))
    return rows


def evaluate_pairs(loaded: LoadedModel, root: Path, device: torch.device, autocast: Callable,
                   caption: str = "caption", batch_size: int = 64, progress: bool = True) -> Dict[str, Any]:
    """Per-pattern accuracy of solving blind pairs with ``caption`` ('caption' = long, 'short')."""
    rows = load_pairs(Path(root))
    images = [Path(row[side]["image"]) for row in rows for side in ("a", "b")]
    texts = [row[side][caption] for row in rows for side in ("a", "b")]
    image_features = encode_images(loaded.model, loaded.preprocess, images, device, autocast, batch_size,
                                   progress=progress, desc="pair images").features
    text_features, cut = encode_texts(loaded.model, loaded.tokenizer, texts, device, autocast, progress=progress)
    image_features = image_features.view(len(rows), 2, -1)
    text_features = text_features.view(len(rows), 2, -1)
    similarity = torch.einsum("pid,ptd->pit", image_features, text_features)  # (pairs, image, text)
    own_a, own_b = similarity[:, 0, 0] > similarity[:, 0, 1], similarity[:, 1, 1] > similarity[:, 1, 0]
    image_to_text = own_a & own_b
    single = (own_a.float() + own_b.float()) / 2
    text_to_image = (similarity[:, 0, 0] > similarity[:, 1, 0]) & (similarity[:, 1, 1] > similarity[:, 0, 1])
    per_pattern: Dict[str, Dict[str, List[float]]] = defaultdict(lambda: {"i2t": [], "t2i": [], "i2t_single": []})
    for row, i2t, t2i, one in zip(rows, image_to_text.tolist(), text_to_image.tolist(), single.tolist()):
        per_pattern[row["pattern"]]["i2t"].append(i2t)
        per_pattern[row["pattern"]]["t2i"].append(t2i)
        per_pattern[row["pattern"]]["i2t_single"].append(one)
    accuracy = {pattern: {name: 100.0 * sum(v[name]) / len(v[name]) for name in ("i2t", "t2i", "i2t_single")}
                for pattern, v in sorted(per_pattern.items())}
    for pattern in accuracy:
        accuracy[pattern]["pairs"] = len(per_pattern[pattern]["i2t"])
    identical = int((text_features[:, 0] == text_features[:, 1]).all(dim=1).sum())
    return {"per_pattern": accuracy, "i2t": 100.0 * image_to_text.float().mean().item(),
            "t2i": 100.0 * text_to_image.float().mean().item(), "i2t_single": 100.0 * single.mean().item(),
            "pairs": len(rows), "caption": caption, "captions_cut": cut,
            "identical_captions_at_context": identical, "context_length": loaded.tokenizer.context_length,
            "solved": image_to_text.tolist()}


def write_pairs_result(path: Path, result: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
