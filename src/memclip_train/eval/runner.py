"""Running evaluations over several models and datasets, with stored results reused (used by the CLI and demo)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch

from memclip.precision import autocast_for

from ..features import encode_images, encode_texts
from ..zeroshot.evaluate import evaluate_zeroshot
from ..zeroshot.registry import ZeroShotOptions, load_zeroshot_set, options_identity
from ..zeroshot.synth_scenes import load_scenes
from .models import LoadedModel, ModelRef, load_model
from .pairs import evaluate_pairs, load_pairs, write_pairs_result
from .markings import evaluate_markings, load_marking_queries
from .retrieval import (cache_key, cached_result, data_fingerprint, evaluate_retrieval, result_path,
                        sources_fingerprint, store_benchmark_result, store_result)
from .retrieval_sets import load_retrieval_set
from .segmentation import ClipSegmenter, SlidingWindow, evaluate_segmentation, load_segmentation_set
from .segmentation.probe import fit_linear_probe, probe_training_set
from .synth_semantics import evaluate_synth_semantics
from .tables import skipped_total

logger = logging.getLogger(__name__)


def split_variant(spec: str) -> Tuple[str, Optional[str]]:
    """'coco@val2017' -> ('coco', 'val2017')."""
    name, _, variant = spec.partition("@")
    return name, variant or None


class ModelCache:
    """Loads each model once, lazily (cached results never load it)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.loaded: Dict[str, LoadedModel] = {}

    def get(self, ref: ModelRef) -> LoadedModel:
        # Keyed by the ref's JSON form: a ref with a text-tower dict is not hashable.
        key = json.dumps([ref.model, ref.pretrained, ref.text_tower, ref.name], sort_keys=True)
        if key not in self.loaded:
            logger.info("loading %s", ref.label)
            self.loaded[key] = load_model(ref, self.device)
        return self.loaded[key]


Results = Dict[str, Dict[str, Dict[str, Any]]]
BENCHMARK_TASKS = {"retrieval": "zeroshot_retrieval", "zeroshot": "zeroshot_classification"}
"""clip_benchmark's ``task`` of each results folder: its result JSONs and ours line up in ``clip_benchmark build``."""
LANGUAGE = "en"
"""The language of the captions and class names of every evaluation set memclip reads (clip_benchmark's key)."""


def _evaluate_with_cache(refs: Sequence[ModelRef], datasets: Sequence[str], roots: Sequence[Path], out: Path,
                         task: str, precision: str, skip_bad: bool, use_cache: bool,
                         load_set: Callable[[str, Path, Optional[str]], Any], fingerprint: Callable[[Any], str],
                         identity: Callable[[ModelRef], Dict[str, Any]],
                         evaluate: Callable[[ModelRef, Any], Dict[str, Any]],
                         summary: Callable[[Dict[str, Any]], str]) -> Results:
    """Every model on every dataset, a stored result reused when its cache key matches: results[label][dataset].

    Args:
        task: the results' folder under ``out`` (see :func:`result_path`).
        load_set: (name, root, variant) -> the dataset; fingerprint: dataset -> its data fingerprint.
        identity: a model's cache identity; evaluate: (model, dataset) -> a new result; summary: result -> the
            figures logged after evaluating.
    """
    results: Results = {ref.label: {} for ref in refs}
    for spec, root in zip(datasets, roots):
        name, variant = split_variant(spec)
        loaded_set = load_set(name, root, variant)
        data = fingerprint(loaded_set)
        for ref in refs:
            key = cache_key(identity(ref), name, variant, root, precision, skip_bad, data)
            path = result_path(out, name, variant, ref.tag, task=task)
            result = cached_result(path, key) if use_cache else None
            if result is not None:
                logger.info("%s on %s: cached in %s", ref.label, spec, path)
            else:
                result = evaluate(ref, loaded_set)
                result.update({"model": ref.model, "pretrained": ref.pretrained or "", "dataset": name,
                               "variant": loaded_set.meta.get("variant"), "task": BENCHMARK_TASKS[task],
                               "language": LANGUAGE, "data_root": str(root), "precision": precision,
                               "cache_key": key})
                store_benchmark_result(path, result)
                logger.info("%s on %s: %s", ref.label, spec, summary(result))
            results[ref.label][spec] = result
    return results


def run_retrieval(refs: Sequence[ModelRef], datasets: Sequence[str], roots: Sequence[Path], out: Path,
                  device: torch.device, precision: str, batch_size: int = 64, workers: int = 0,
                  skip_bad: bool = False, use_cache: bool = True, progress: bool = True,
                  models: Optional[ModelCache] = None) -> Results:
    """Evaluate every model on every dataset (reusing stored results); returns results[model label][dataset]."""
    models = models or ModelCache(device)
    autocast = autocast_for(precision, device)

    def evaluate(ref: ModelRef, dataset: Any) -> Dict[str, Any]:
        result = evaluate_retrieval(models.get(ref), dataset, device, autocast, batch_size, workers, skip_bad,
                                    progress)
        return dict(result, skip_bad=skip_bad)

    def summary(result: Dict[str, Any]) -> str:
        return (f"T2I R@1 {result['metrics']['t2i_R@1']:.1f}, I2T R@1 {result['metrics']['i2t_R@1']:.1f} "
                f"({result['num_images']} images, {result['images_per_second']:.0f} images/s, "
                f"{result['captions_cut']} captions cut at {result['context_length']} tokens)")

    return _evaluate_with_cache(
        refs, datasets, roots, out, "retrieval", precision, skip_bad, use_cache,
        lambda name, root, variant: load_retrieval_set(name, root, variant, skip_bad), data_fingerprint,
        lambda ref: ref.identity(), evaluate, summary)


def run_zeroshot(refs: Sequence[ModelRef], datasets: Sequence[str], roots: Sequence[Path], out: Path,
                 device: torch.device, precision: str, batch_size: int = 64, workers: int = 0,
                 skip_bad: bool = False, use_cache: bool = True, progress: bool = True,
                 models: Optional[ModelCache] = None, options: Optional[ZeroShotOptions] = None) -> Results:
    """Zero-shot top-1/top-5 of every model on every dataset (reusing stored results); results[label][dataset]."""
    models = models or ModelCache(device)
    options = options or ZeroShotOptions()
    autocast = autocast_for(precision, device)

    def evaluate(ref: ModelRef, dataset: Any) -> Dict[str, Any]:
        loaded = models.get(ref)
        return evaluate_zeroshot(loaded.model, loaded.preprocess, loaded.tokenizer, dataset, device, autocast,
                                 batch_size, workers, skip_bad, progress, model_name=ref.label)

    def summary(result: Dict[str, Any]) -> str:
        return (f"top-1 {result['metrics']['top1']:.1f}, top-5 {result['metrics']['top5']:.1f} "
                f"({result['num_images']} images, {result['num_classes']} classes, {result['prompts']})")

    return _evaluate_with_cache(
        refs, datasets, roots, out, "zeroshot", precision, skip_bad, use_cache,
        lambda name, root, variant: load_zeroshot_set(name, root, variant, options, skip_bad),
        lambda dataset: sources_fingerprint([dataset.labels, dataset.class_names,
                                             [str(item) for item in dataset.bad_items]], dataset.images),
        lambda ref: dict(ref.identity(), zeroshot_options=options_identity(options)), evaluate, summary)


PROBE_SUFFIX = ", linear probe"
"""What a probe's result key adds to the method: ``"<model> [sclip, linear probe]"``."""


def run_segmentation(refs: Sequence[ModelRef], datasets: Sequence[str], roots: Sequence[Path], methods: Sequence[str],
                     out: Path, device: torch.device, precision: str, window: Optional[int] = None,
                     stride: Optional[int] = None, short_side: Optional[int] = None, logit_scale: float = 40.0,
                     num_overlays: int = 8, limit: Optional[int] = None, progress: bool = True,
                     models: Optional[ModelCache] = None, probe_roots: Optional[Sequence[Optional[Path]]] = None,
                     probe_split: str = "val", skip_bad: bool = False) -> Results:
    """mIoU of every model x dataset x method; returns results[f"{model} [{method}]"][dataset].

    With ``probe_roots`` (one per dataset, None to skip one), a linear probe fitted on the patch features of the
    labelled set there (its ``probe_split``: e.g. the benchmark's own ``train`` split) is scored too, under
    results[f"{model} [{method}, linear probe]"] (see :mod:`.segmentation.probe`). ``skip_bad`` skips and counts
    images or masks that cannot be used (see :func:`evaluate_segmentation`) instead of stopping.
    """
    models = models or ModelCache(device)
    autocast = autocast_for(precision, device)
    results: Results = {}
    probe_roots = list(probe_roots) if probe_roots is not None else [None] * len(datasets)
    for name, root, probe_root in zip(datasets, roots, probe_roots):
        dataset = load_segmentation_set(name, root)
        probe_set = load_segmentation_set(name, probe_root, probe_split) if probe_root is not None else None
        templates = ("80 OpenAI ImageNet templates" if dataset.templates is None else
                     f"{len(dataset.templates)} templates of the dataset")
        for ref in refs:
            loaded = models.get(ref)
            size = loaded.model.visual.image_size
            size = size[0] if isinstance(size, (tuple, list)) else size
            geometry = SlidingWindow.for_model(window or size, dataset.short_side_ratio)
            geometry = SlidingWindow(geometry.window, stride or geometry.stride, short_side or geometry.short_side)
            for method in methods:
                folder = Path(out) / "segmentation" / name / method
                variants = [(method, None, {"templates": templates})]
                if probe_set is not None:
                    features, labels = probe_training_set(loaded.model, probe_set, method, device, autocast,
                                                          model_name=ref.label)
                    weights = fit_linear_probe(features, labels, len(dataset.class_names))
                    classifier = (weights, torch.arange(len(dataset.class_names)))
                    variants.append((f"{method}{PROBE_SUFFIX}", classifier,
                                     {"templates": "none (linear probe)", "probe_data_root": str(probe_root),
                                      "probe_split": probe_split, "probe_patches": len(labels)}))
                for key, classifier, extra in variants:
                    segmenter = ClipSegmenter(loaded.model, loaded.tokenizer, dataset.class_names, method, geometry,
                                              device, autocast, logit_scale, dataset.templates, classifier,
                                              model_name=ref.label)
                    stem = ref.tag if classifier is None else f"{ref.tag}_probe"
                    result = evaluate_segmentation(dataset, segmenter, folder / f"{stem}_overlays", num_overlays,
                                                   limit, progress, skip_bad)
                    result.update({"model": ref.model, "pretrained": ref.pretrained, "dataset": name,
                                   "method": method, "window": geometry.window, "stride": geometry.stride,
                                   "short_side": geometry.short_side, "logit_scale": logit_scale,
                                   "precision": precision, "skip_bad": skip_bad, **extra})
                    store_result(folder / f"{stem}.json", result)
                    logger.info("%s [%s] on %s: mIoU %.1f", ref.label, key, name, result["mIoU"])
                    results.setdefault(f"{ref.label} [{key}]", {})[name] = result
    return results


def run_synth_semantics(refs: Sequence[ModelRef], world: Path, out: Path, device: torch.device, precision: str,
                        batch_size: int = 64, progress: bool = True, models: Optional[ModelCache] = None
                        ) -> Dict[str, Dict[str, Any]]:
    """Semantic short-caption retrieval on the world's retrieval images; returns results[model label] (see
    :mod:`.synth_semantics`)."""
    models = models or ModelCache(device)
    autocast = autocast_for(precision, device)
    scenes = load_scenes(world)
    dataset = load_retrieval_set("synth-short", world, None)
    first_caption: Dict[int, str] = {}
    for caption, owner in zip(dataset.captions, dataset.text_to_image):
        first_caption.setdefault(owner, caption)
    short = [first_caption[i] for i in range(len(dataset.images))]
    results = {}
    for ref in refs:
        loaded = models.get(ref)
        images = encode_images(loaded.model, loaded.preprocess, dataset.images, device, autocast, batch_size,
                               progress=progress, desc="synth images", model_name=ref.label)

        def encode(texts: Sequence[str]) -> torch.Tensor:
            return encode_texts(loaded.model, loaded.tokenizer, texts, device, autocast, progress=progress,
                                model_name=ref.label)[0]

        result = evaluate_synth_semantics(encode, images.features, short, scenes)
        result.update({"model": ref.model, "pretrained": ref.pretrained, "world": str(world), "precision": precision})
        store_result(Path(out) / "synth_semantics" / f"{ref.tag}.json", result)
        logger.info("%s: semantic short-caption T2I R@1 %.1f", ref.label, result["metrics"]["semantic_t2i_R@1"])
        results[ref.label] = result
    return results


def run_markings(refs: Sequence[ModelRef], world: Path, out: Path, device: torch.device, precision: str,
                 candidates: int, batch_size: int = 64, progress: bool = True, use_cache: bool = True,
                 skip_bad: bool = False) -> Dict[str, Dict[str, Any]]:
    """Marking R@1 of every model on a world with markings (see :mod:`.markings`); returns results[model label],
    each also stored as ``out/markings/<model tag>.json``. Text features are cached under
    ``out/markings/text_features`` unless ``use_cache`` is off; ``skip_bad`` skips and counts retrieval images whose
    scene or caption cannot make a marking query."""
    models = ModelCache(device)
    autocast = autocast_for(precision, device)
    queries = load_marking_queries(world, candidates, skip_bad)
    results = {}
    for ref in refs:
        result = evaluate_markings(models.get(ref), queries, device, autocast, batch_size, progress,
                                   cache_dir=Path(out) / "markings" / "text_features" if use_cache else None)
        result.update({"model": ref.model, "pretrained": ref.pretrained, "label": ref.label, "world": str(world),
                       "precision": precision})
        store_result(Path(out) / "markings" / f"{ref.tag}.json", result)
        logger.info("%s: marking R@1 %.1f (chance %.1f, %d markings), long T2I R@1 %.1f", ref.label,
                    result["metrics"]["marking_R@1"], result["metrics"]["chance"], result["markings"],
                    result["metrics"]["long_t2i_R@1"])
        results[ref.label] = result
    return results


def run_pairs(refs: Sequence[ModelRef], root: Path, out: Path, device: torch.device, precision: str,
              caption: str = "caption", batch_size: int = 64, progress: bool = True,
              models: Optional[ModelCache] = None, skip_bad: bool = False) -> Dict[str, Dict[str, Any]]:
    """Blind-pair accuracy of every model (see :mod:`.pairs`); returns results[model label], each also stored as
    ``out/pairs/<model tag>.json``. The pairs are read (and checked) before any model is loaded."""
    models = models or ModelCache(device)
    load_pairs(Path(root), caption, skip_bad)
    results = {}
    for ref in refs:
        result = evaluate_pairs(models.get(ref), root, device, autocast_for(precision, device), caption, batch_size,
                                progress, skip_bad)
        write_pairs_result(Path(out) / "pairs" / f"{ref.tag}.json", result)
        results[ref.label] = result
    return results


def pairs_table(results: Dict[str, Dict[str, Any]]) -> str:
    """Image-to-text pair accuracy per pattern and overall (%), and the pairs ``--skip-bad`` left out when any."""
    patterns = sorted({p for r in results.values() for p in r["per_pattern"]})
    skipped = any(skipped_total(result) for result in results.values())
    header = ["model"] + patterns + ["all"] + (["skipped"] if skipped else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, result in results.items():
        cells = [f"{result['per_pattern'][p]['i2t']:.0f}" for p in patterns] + [f"{result['i2t']:.1f}"]
        cells += [str(skipped_total(result))] if skipped else []
        lines.append("| " + " | ".join([label] + cells) + " |")
    return "\n".join(lines)
