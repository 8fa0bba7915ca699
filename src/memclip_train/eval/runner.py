"""Running evaluations over several models and datasets, with stored results reused (used by the CLI and demo)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from .models import LoadedModel, ModelRef, autocast_for, load_model
from .pairs import evaluate_pairs, write_pairs_result
from .retrieval import cache_key, cached_result, data_fingerprint, evaluate_retrieval, result_path, store_result
from .retrieval_sets import load_retrieval_set
from .segmentation import ClipSegmenter, SlidingWindow, evaluate_segmentation, load_segmentation_set

logger = logging.getLogger(__name__)


def split_variant(spec: str) -> Tuple[str, Optional[str]]:
    """'coco@val2017' -> ('coco', 'val2017')."""
    name, _, variant = spec.partition("@")
    return name, variant or None


class ModelCache:
    """Loads each model once, lazily (cached results never load it)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.loaded: Dict[ModelRef, LoadedModel] = {}

    def get(self, ref: ModelRef) -> LoadedModel:
        if ref not in self.loaded:
            logger.info("loading %s", ref.label)
            self.loaded[ref] = load_model(ref, self.device)
        return self.loaded[ref]


def run_retrieval(refs: Sequence[ModelRef], datasets: Sequence[str], roots: Sequence[Path], out: Path,
                  device: torch.device, precision: str, batch_size: int = 64, workers: int = 0,
                  skip_bad: bool = False, use_cache: bool = True, progress: bool = True,
                  models: Optional[ModelCache] = None) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Evaluate every model on every dataset (reusing stored results); returns results[model label][dataset]."""
    models = models or ModelCache(device)
    autocast = autocast_for(precision, device)
    results: Dict[str, Dict[str, Dict[str, Any]]] = {ref.label: {} for ref in refs}
    for spec, root in zip(datasets, roots):
        name, variant = split_variant(spec)
        loaded_set = load_retrieval_set(name, root, variant)
        fingerprint = data_fingerprint(loaded_set)
        for ref in refs:
            key = cache_key(ref.identity(), name, variant, root, precision, skip_bad, fingerprint)
            path = result_path(out, name, variant, ref.tag)
            result = cached_result(path, key) if use_cache else None
            if result is not None:
                logger.info("%s on %s: cached in %s", ref.label, spec, path)
            else:
                result = evaluate_retrieval(models.get(ref), loaded_set, device, autocast, batch_size, workers,
                                            skip_bad, progress)
                result.update({"model": ref.model, "pretrained": ref.pretrained, "dataset": name,
                               "variant": loaded_set.meta.get("variant"), "data_root": str(root),
                               "precision": precision, "skip_bad": skip_bad, "cache_key": key})
                store_result(path, result)
                logger.info("%s on %s: T2I R@1 %.1f, I2T R@1 %.1f (%d images, %.0f images/s, %d captions cut at %d "
                            "tokens)", ref.label, spec, result["metrics"]["t2i_R@1"], result["metrics"]["i2t_R@1"],
                            result["num_images"], result["images_per_second"], result["captions_cut"],
                            result["context_length"])
            results[ref.label][spec] = result
    return results


def run_segmentation(refs: Sequence[ModelRef], datasets: Sequence[str], roots: Sequence[Path], methods: Sequence[str],
                     out: Path, device: torch.device, precision: str, window: Optional[int] = None,
                     stride: Optional[int] = None, short_side: Optional[int] = None, logit_scale: float = 40.0,
                     num_overlays: int = 8, limit: Optional[int] = None, progress: bool = True,
                     models: Optional[ModelCache] = None) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """mIoU of every model x dataset x method; returns results[f"{model} [{method}]"][dataset]."""
    models = models or ModelCache(device)
    autocast = autocast_for(precision, device)
    results: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for name, root in zip(datasets, roots):
        dataset = load_segmentation_set(name, root)
        for ref in refs:
            loaded = models.get(ref)
            size = loaded.model.visual.image_size
            size = size[0] if isinstance(size, (tuple, list)) else size
            geometry = SlidingWindow.for_model(window or size, dataset.short_side_ratio)
            geometry = SlidingWindow(geometry.window, stride or geometry.stride, short_side or geometry.short_side)
            for method in methods:
                segmenter = ClipSegmenter(loaded.model, loaded.tokenizer, dataset.class_names, method, geometry,
                                          device, autocast, logit_scale)
                folder = Path(out) / "segmentation" / name / method
                result = evaluate_segmentation(dataset, segmenter, folder / f"{ref.tag}_overlays", num_overlays,
                                               limit, progress)
                result.update({"model": ref.model, "pretrained": ref.pretrained, "dataset": name, "method": method,
                               "window": geometry.window, "stride": geometry.stride,
                               "short_side": geometry.short_side, "logit_scale": logit_scale,
                               "templates": "80 OpenAI ImageNet templates", "precision": precision})
                store_result(folder / f"{ref.tag}.json", result)
                logger.info("%s [%s] on %s: mIoU %.1f", ref.label, method, name, result["mIoU"])
                results.setdefault(f"{ref.label} [{method}]", {})[name] = result
    return results


def run_pairs(refs: Sequence[ModelRef], root: Path, out: Path, device: torch.device, precision: str,
              caption: str = "caption", batch_size: int = 64, progress: bool = True,
              models: Optional[ModelCache] = None) -> Dict[str, Dict[str, Any]]:
    models = models or ModelCache(device)
    results = {}
    for ref in refs:
        result = evaluate_pairs(models.get(ref), root, device, autocast_for(precision, device), caption, batch_size,
                                progress)
        write_pairs_result(Path(out) / "pairs" / f"{ref.tag}.json", result)
        results[ref.label] = result
    return results


def pairs_table(results: Dict[str, Dict[str, Any]]) -> str:
    patterns = sorted({p for r in results.values() for p in r["per_pattern"]})
    header = ["model"] + patterns + ["all"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, result in results.items():
        cells = [f"{result['per_pattern'][p]['i2t']:.0f}" for p in patterns] + [f"{result['i2t']:.1f}"]
        lines.append("| " + " | ".join([label] + cells) + " |")
    return "\n".join(lines)
