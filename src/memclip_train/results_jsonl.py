"""``checkpoints/results.jsonl``: one line per validation, in open_clip_train's names and units, so that notebooks
written for open_clip_train runs read memclip runs (``metrics.jsonl`` keeps memclip's own names).

    val_t2i_R@1 (%)          -> text_to_image_R@1 (fraction)     val_i2t_mean_rank -> image_to_text_mean_rank
    val_long_t2i_R@5 (%)     -> long_text_to_image_R@5           val_distill_cosine -> distill_cosine
    imagenet-zeroshot-val-top1 (already open_clip_train's)        plus "epoch" and "num_samples"

Median ranks are the lower median of the 1-based ranks (open_clip_train floors the mean of the two middle ones).
"""
from __future__ import annotations

import re
from typing import Any, Dict, Optional

RESULTS_FILE = "results.jsonl"
_RETRIEVAL = re.compile(r"^val_(?:(?P<caption>long|short)_)?(?P<direction>t2i|i2t)_"
                        r"(?P<what>R@\d+|mean_rank|median_rank)$")
_DIRECTIONS = {"t2i": "text_to_image", "i2t": "image_to_text"}


def open_clip_train_name(key: str, value: Any) -> Optional[tuple]:
    """(open_clip_train's name, value in its unit) of one of memclip's metrics, or None for one it has no name for
    (timings, skipped-image counts)."""
    match = _RETRIEVAL.match(key)
    if match:
        name = f"{_DIRECTIONS[match['direction']]}_{match['what']}"
        if match["caption"]:
            name = f"{match['caption']}_{name}"
        return name, value / 100 if match["what"].startswith("R@") else value
    if key.startswith("val_"):
        return key[len("val_"):], value
    if key.endswith(("-top1", "-top5")) or key.startswith("memory"):
        return key, value
    return None


def results_record(epoch: int, metrics: Dict[str, Any], num_samples: Optional[int]) -> Dict[str, Any]:
    """The results.jsonl line of the validation and zero-shot ``metrics`` measured after ``epoch``."""
    record: Dict[str, Any] = {}
    for key, value in metrics.items():
        named = open_clip_train_name(key, value)
        if named is not None:
            record[named[0]] = named[1]
    record["epoch"] = epoch
    if num_samples is not None:
        record["num_samples"] = num_samples
    return record
