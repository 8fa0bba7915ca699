"""Retrieval evaluation: features, recall@k and ranks, memory usage, and cached per-model result files."""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Union

import torch

from memclip.atomic_io import atomic_write, atomic_write_json
from memclip.surgery import usage_by_block
from memory_layers import track_usage

from ..features import encode_images, encode_texts
from ..retrieval_metrics import clip_benchmark_retrieval_metrics, metrics_from_ranks, query_ranks
from .models import LoadedModel
from .retrieval_sets import RetrievalSet

logger = logging.getLogger(__name__)


def memory_usage_summary(model: torch.nn.Module, usage: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
    """{block index: {fraction_read, kl_from_uniform, tokens, n_slots}} from ``track_usage`` trackers."""
    return {str(block): summary.to_dict() for block, summary in usage_by_block(model, usage).items()}


def evaluate_retrieval(loaded: LoadedModel, dataset: RetrievalSet, device: torch.device, autocast: Callable,
                       batch_size: int = 64, workers: int = 0, skip_bad: bool = False,
                       progress: bool = True) -> Dict[str, Any]:
    """Recall@1/5/10 and ranks both ways for one model on one dataset, with what is needed to reproduce them.

    Returns:
        {"metrics": {memclip's R@k in %, mean/median ranks, clip_benchmark's recalls as fractions}, "num_images",
         "num_texts", "context_length", "captions_cut", "meta", "images_per_second", "skipped_images",
         "images_without_captions", "bad_items", "skipped", "memory_usage", "ranks": {"t2i": [...], "i2t": [...]}};
         ``skipped`` counts what ``skip_bad`` left out (unreadable images, images without captions, bad items of the
         annotations, and their total).

    Raises:
        BadImageError: an image is unreadable and ``skip_bad`` is off.
        BadItemError: an image has no caption, or the reader found a bad item, and ``skip_bad`` is off.
    """
    dataset.check(skip_bad)
    model = loaded.model
    with track_usage(model) as usage:
        images = encode_images(model, loaded.preprocess, dataset.images, device, autocast, batch_size, workers,
                               skip_bad, progress, desc=f"{dataset.name} images", model_name=loaded.ref.label)
    if images.bad:
        logger.warning("%s: skipped %d unreadable images (--skip-bad), e.g. %s", dataset.name, len(images.bad),
                       images.bad[0][0])
        dataset = dataset.subset(images.kept)
    texts, cut = encode_texts(model, loaded.tokenizer, dataset.captions, device, autocast, progress=progress,
                              desc=f"{dataset.name} captions", model_name=loaded.ref.label)
    ranks = query_ranks(images.features, texts, torch.tensor(dataset.text_to_image))
    metrics = {**metrics_from_ranks(ranks), **clip_benchmark_retrieval_metrics(ranks)}
    context = loaded.tokenizer.context_length
    if cut:
        logger.info("%s: %d of %d captions were cut at %d tokens", dataset.name, cut, len(dataset.captions), context)
    return {
        "metrics": metrics,
        "num_images": len(dataset.images),
        "num_texts": len(dataset.captions),
        "context_length": context,
        "captions_cut": cut,
        "text_tower": loaded.model.memclip_spec.text.to_dict(),
        "meta": dataset.meta,
        "images_per_second": images.images_per_second,
        "skipped_images": [[str(p), m] for p, m in images.bad],
        "images_without_captions": [str(p) for p in dataset.uncaptioned],
        "bad_items": [str(item) for item in dataset.bad_items],
        "skipped": skipped_counts(unreadable_images=len(images.bad), images_without_captions=len(dataset.uncaptioned),
                                  bad_items=len(dataset.bad_items)),
        "memory_usage": memory_usage_summary(model, usage),
        "ranks": {direction: values.tolist() for direction, values in ranks.items()},
    }


def skipped_counts(**counts: int) -> Dict[str, int]:
    """What ``--skip-bad`` left out, by kind, and the ``total`` (which the printed tables show)."""
    return dict(counts, total=sum(counts.values()))


def sources_fingerprint(payload: Any, images: Sequence[Union[str, Path, bytes]]) -> str:
    """A cheap fingerprint of ``payload`` (JSON-ready: captions, labels, ...) and of the images: each file's name,
    size and modification time (a fixed or replaced image changes it), or the hash of in-memory encoded bytes."""
    digest = hashlib.sha256()
    digest.update(json.dumps(payload).encode())
    for image in images:
        if isinstance(image, (bytes, bytearray)):
            digest.update(hashlib.sha256(image).digest())
            continue
        stat = os.stat(image) if os.path.exists(image) else None
        digest.update(f"{image}|{stat.st_size if stat else -1}|{stat.st_mtime_ns if stat else -1}\n".encode())
    return digest.hexdigest()


def data_fingerprint(dataset: RetrievalSet) -> str:
    """What a retrieval result depends on in the data: the captions and which image each describes, the bad items
    left out, and every image file (see :func:`sources_fingerprint`)."""
    return sources_fingerprint([dataset.captions, dataset.text_to_image, [str(item) for item in dataset.bad_items]],
                               [*dataset.images, *dataset.uncaptioned])


def cache_key(identity: Dict[str, Any], dataset: str, variant: Optional[str], data_root: Path, precision: str,
              skip_bad: bool, fingerprint: str) -> str:
    """Everything that changes a result: the model's identity, the dataset, its variant, folder and data
    fingerprint, the precision and whether bad images are skipped."""
    payload = json.dumps({"model": identity, "dataset": dataset, "variant": variant,
                          "data_root": str(Path(data_root).resolve()), "precision": precision, "skip_bad": skip_bad,
                          "data": fingerprint}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def result_path(out: Path, dataset: str, variant: Optional[str], model_tag: str, task: str = "retrieval") -> Path:
    """``out/<task>/<dataset>[__<variant>]/<model tag>.json``."""
    folder = dataset if not variant else f"{dataset}__{variant.replace(':', '-')}"
    return Path(out) / task / folder / f"{model_tag}.json"


PER_QUERY_KEYS = ("ranks", "predictions")
"""Per-query lists of a retrieval or zero-shot result, stored beside its JSON (see :func:`store_benchmark_result`)."""
PER_QUERY_SUFFIX = ".per_query.json.gz"


def per_query_path(path: Path) -> Path:
    """``out/retrieval/coco/<model>.json`` -> ``out/retrieval/coco/<model>.per_query.json.gz``."""
    return path.with_name(path.stem + PER_QUERY_SUFFIX)


def read_result(path: Path) -> Dict[str, Any]:
    """A stored result with its per-query lists put back (see :func:`store_benchmark_result`).

    Raises:
        OSError, ValueError: the file or its per-query file is missing or damaged.
    """
    result = json.loads(Path(path).read_text())
    if "per_query" in result:
        with gzip.open(Path(path).with_name(result.pop("per_query")), "rt", encoding="utf-8") as file:
            result.update(json.load(file))
    return result


def cached_result(path: Path, key: str) -> Optional[Dict[str, Any]]:
    """The stored result (with its per-query lists) when its cache key matches (see :func:`cache_key`), else None."""
    if not path.is_file():
        return None
    try:
        result = read_result(path)
    except (ValueError, OSError, EOFError):
        return None
    return result if result.get("cache_key") == key else None


def store_result(path: Path, result: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, dict(result, written=time.strftime("%Y-%m-%d %H:%M:%S")))


def store_benchmark_result(path: Path, result: Dict[str, Any]) -> None:
    """Store a retrieval or zero-shot result as clip_benchmark's ``build`` reads it: every top-level key becomes one
    CSV cell, so the per-query lists (:data:`PER_QUERY_KEYS`) go to a gzipped file beside it, named under
    ``per_query``; :func:`cached_result` puts them back."""
    per_query = {key: result[key] for key in PER_QUERY_KEYS if key in result}
    summary = {key: value for key, value in result.items() if key not in per_query}
    if per_query:
        sidecar = per_query_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(sidecar, lambda temporary: _write_gzip_json(temporary, per_query))
        summary["per_query"] = sidecar.name
    store_result(path, summary)


def _write_gzip_json(path: str, data: Dict[str, Any]) -> None:
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped:
        zipped.write(json.dumps(data).encode("utf-8"))
