"""MMVP-style blind pairs: two images that differ in one attribute, each with its caption.

A pair counts as solved only if each image ranks its own caption above the other one (image -> text), and, in the
other direction, each caption ranks its own image first (text -> image). A model blind to the difference scores 0
(its two images agree on which caption fits better), so this is stricter than the per-image score ("i2t_single":
the share of single images that prefer their own caption, 50 for a blind model), which is reported too.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import torch

from ..dataset_files import BadItem, LayoutError, read_jsonl, refuse_or_count
from ..features import encode_images, encode_texts
from ..retrieval_metrics import worst_for_nan
from memclip.atomic_io import atomic_write_json

from .models import LoadedModel
from .retrieval_sets.base import text_problem

PAIRS_LAYOUT = """    <world>/pairs/pairs.jsonl   {"id", "pattern", "a": {"image", "caption", "short"}, "b": {...}} per line
    <world>/pairs/images/<id>_a.jpg, <id>_b.jpg"""


def _row_problem(row: Any, caption: str) -> str:
    """Why a pairs.jsonl row is not a pair with ``caption`` texts ('' when it is one)."""
    if not isinstance(row, dict) or not isinstance(row.get("pattern"), str):
        return "has no 'pattern'"
    for side in ("a", "b"):
        if not isinstance(row.get(side), dict) or not isinstance(row[side].get("image"), str):
            return f"side '{side}' has no 'image'"
        problem = text_problem(row[side].get(caption))
        if problem:
            return f"side '{side}' '{caption}' {problem}"
    return ""


def load_pairs(root: Path, caption: str = "caption", skip_bad: bool = False
               ) -> Tuple[List[Dict[str, Any]], List[BadItem]]:
    """The pairs of ``root/pairs/pairs.jsonl`` (image paths made absolute), and the rows left out.

    Raises:
        LayoutError: the file is missing or holds no usable pair.
        BadItemError: a row without a pattern, an image or a ``caption`` text (null, not a string or empty), or that
            repeats a pair id (it would be counted twice), unless ``skip_bad``: then such rows are left out.
    """
    folder = root / "pairs" if (root / "pairs").is_dir() else root
    source = folder / "pairs.jsonl"
    rows, bad, ids = [], [], set()
    for number, row in enumerate(read_jsonl("pairs", source, PAIRS_LAYOUT), 1):
        problem = _row_problem(row, caption)
        if not problem and row.get("id") is not None and row["id"] in ids:
            problem = f"repeats the pair id {row['id']!r}: it would be counted twice"
        if problem:
            bad.append(BadItem(str(source), f"line {number}", problem))
            continue
        ids.add(row.get("id"))
        rows.append(dict(row, **{side: dict(row[side], image=str(folder / row[side]["image"])) for side in "ab"}))
    if not rows and not bad:
        raise LayoutError("pairs", source, PAIRS_LAYOUT, "no pairs in")
    refuse_or_count("pairs", bad, skip_bad)
    if not rows:
        raise LayoutError("pairs", source, PAIRS_LAYOUT, f"no usable pair (e.g. {bad[0]}) in")
    return rows, bad


def evaluate_pairs(loaded: LoadedModel, root: Path, device: torch.device, autocast: Callable,
                   caption: str = "caption", batch_size: int = 64, progress: bool = True,
                   skip_bad: bool = False) -> Dict[str, Any]:
    """Per-pattern accuracy of solving blind pairs with ``caption`` ('caption' = long, 'short').

    ``skip_bad`` leaves out (and counts in ``skipped``) rows that are not pairs and pairs with an unreadable image;
    without it they are errors naming the file and the row or image.
    """
    rows, bad_rows = load_pairs(Path(root), caption, skip_bad)
    images = [Path(row[side]["image"]) for row in rows for side in ("a", "b")]
    encoded = encode_images(loaded.model, loaded.preprocess, images, device, autocast, batch_size,
                            skip_bad=skip_bad, progress=progress, desc="pair images", model_name=loaded.ref.label)
    kept = set(encoded.kept)
    whole = [index for index in range(len(rows)) if 2 * index in kept and 2 * index + 1 in kept]
    position = {image: row for row, image in enumerate(encoded.kept)}
    image_features = encoded.features[[position[2 * i + side] for i in whole for side in (0, 1)]]
    unreadable = len(rows) - len(whole)
    rows = [rows[i] for i in whole]
    if not rows:
        raise LayoutError("pairs", Path(root), PAIRS_LAYOUT, "no pair with two readable images in")
    texts = [row[side][caption] for row in rows for side in ("a", "b")]
    text_features, cut = encode_texts(loaded.model, loaded.tokenizer, texts, device, autocast, progress=progress,
                                      model_name=loaded.ref.label)
    image_features = image_features.view(len(rows), 2, -1)
    text_features = text_features.view(len(rows), 2, -1)
    similarity = worst_for_nan(torch.einsum("pid,ptd->pit", image_features, text_features))  # (pairs, image, text)
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
            "solved": image_to_text.tolist(), "bad_items": [str(item) for item in bad_rows],
            "skipped": {"pairs_with_an_unreadable_image": unreadable, "bad_items": len(bad_rows),
                        "total": unreadable + len(bad_rows)}}


def write_pairs_result(path: Path, result: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, result)
