"""Markdown tables in the shape of the thesis tables: models as rows, dataset x direction x R@k as columns.

When ``--skip-bad`` left anything out of a dataset (unreadable images, images without captions, bad annotation
items, ...), its table gains a ``<dataset> skipped`` column with the count, so a number computed on a smaller task
never looks like one computed on the whole."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence


def skipped_total(result: Mapping[str, Any]) -> int:
    """How many items ``--skip-bad`` left out of one result (0 for results written before it was counted)."""
    return int(result.get("skipped", {}).get("total", 0))


def _skipped_datasets(results: Dict[str, Dict[str, Dict]], datasets: Sequence[str]) -> List[str]:
    """The datasets for which some model's result left something out."""
    return [d for d in datasets if any(skipped_total(per_dataset.get(d, {})) for per_dataset in results.values())]


def _skipped_cells(per_dataset: Dict[str, Dict], datasets: Sequence[str]) -> List[str]:
    return [str(skipped_total(per_dataset[d])) if d in per_dataset else "-" for d in datasets]


def retrieval_table(results: Dict[str, Dict[str, Dict]], datasets: Sequence[str],
                    ks: Sequence[int] = (1, 5, 10)) -> str:
    """``results[model][dataset]`` -> a markdown table (recalls in %, one decimal); missing cells are '-'."""
    header = ["model"]
    for dataset in datasets:
        for direction in ("T2I", "I2T"):
            header.extend(f"{dataset} {direction} R@{k}" for k in ks)
    skipped = _skipped_datasets(results, datasets)
    header.extend(f"{d} skipped" for d in skipped)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, per_dataset in results.items():
        row: List[str] = [model]
        for dataset in datasets:
            metrics = per_dataset.get(dataset, {}).get("metrics", {})
            for direction in ("t2i", "i2t"):
                for k in ks:
                    value = metrics.get(f"{direction}_R@{k}")
                    row.append("-" if value is None else f"{value:.1f}")
        row.extend(_skipped_cells(per_dataset, skipped))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def segmentation_table(results: Dict[str, Dict[str, Dict]], datasets: Sequence[str]) -> str:
    """``results[model][dataset]`` -> mIoU per dataset (%)."""
    skipped = _skipped_datasets(results, datasets)
    header = ["model"] + [f"{d} mIoU" for d in datasets] + [f"{d} skipped" for d in skipped]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, per_dataset in results.items():
        cells = [f"{per_dataset[d]['mIoU']:.1f}" if d in per_dataset else "-" for d in datasets]
        cells += _skipped_cells(per_dataset, skipped)
        lines.append("| " + " | ".join([model] + cells) + " |")
    return "\n".join(lines)


def zeroshot_table(results: Dict[str, Dict[str, Dict]], datasets: Sequence[str]) -> str:
    """``results[model][dataset]`` -> top-1 and top-5 accuracy per dataset (%)."""
    skipped = _skipped_datasets(results, datasets)
    header = ["model"] + [f"{d} {k}" for d in datasets for k in ("top-1", "top-5")] + [f"{d} skipped" for d in skipped]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, per_dataset in results.items():
        cells = []
        for dataset in datasets:
            metrics = per_dataset.get(dataset, {}).get("metrics", {})
            cells.extend("-" if metrics.get(k) is None else f"{metrics[k]:.1f}" for k in ("top1", "top5"))
        cells += _skipped_cells(per_dataset, skipped)
        lines.append("| " + " | ".join([model] + cells) + " |")
    return "\n".join(lines)


COMPETENCE_COLUMNS = (("semantic_t2i_R@1", "semantic T2I R@1"), ("semantic_t2i_R@5", "semantic T2I R@5"),
                      ("synth-shapes", "zero-shot shape"), ("synth-colours", "zero-shot colour"),
                      ("synth-sizes", "zero-shot size"))


def competence_table(semantics: Dict[str, Dict], zeroshot: Dict[str, Dict[str, Dict]]) -> str:
    """One row per model: semantic short-caption recall (``semantics[model]``) and the synthetic world's zero-shot
    top-1 (``zeroshot[model][dataset]``), in %."""
    header = ["model"] + [title for _, title in COMPETENCE_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, result in semantics.items():
        cells = [f"{result['metrics'][key]:.1f}" if key in result["metrics"]
                 else f"{zeroshot[model][key]['metrics']['top1']:.1f}" for key, _ in COMPETENCE_COLUMNS]
        lines.append("| " + " | ".join([model] + cells) + " |")
    return "\n".join(lines)


def markings_table(results: Dict[str, Dict]) -> str:
    """``results[model]`` of the marking evaluation -> marking R@1 (with chance) and long-caption T2I R@1 (%), and
    the images ``--skip-bad`` left out when it left any."""
    skipped = any(skipped_total(result) for result in results.values())
    lines = ["| model | marking R@1 | chance | long T2I R@1 |" + (" skipped |" if skipped else ""),
             "|---|---|---|---|" + ("---|" if skipped else "")]
    for model, result in results.items():
        metrics = result["metrics"]
        lines.append(f"| {model} | {metrics['marking_R@1']:.1f} | {metrics['chance']:.1f} | "
                     f"{metrics['long_t2i_R@1']:.1f} |" + (f" {skipped_total(result)} |" if skipped else ""))
    return "\n".join(lines)


def salience_table(breakdowns: Dict[str, Dict[str, Dict]], datasets: Sequence[str], groups: Sequence[str]) -> str:
    """``breakdowns[model][dataset]`` (:func:`.synth_semantics.zeroshot_breakdown`) -> zero-shot top-1 (%) per
    dataset and salience group, with the number of images in each group in the header."""
    first = next(iter(breakdowns.values()), {})
    header = ["model"]
    for dataset in datasets:
        sizes = first.get(dataset, {}).get("by_salience", {})
        header.extend(f"{dataset} {group} (n={sizes[group]['images']})" if group in sizes else f"{dataset} {group}"
                      for group in groups)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, per_dataset in breakdowns.items():
        cells = []
        for dataset in datasets:
            by_salience = per_dataset.get(dataset, {}).get("by_salience", {})
            cells.extend(f"{by_salience[g]['top1']:.1f}" if g in by_salience else "-" for g in groups)
        lines.append("| " + " | ".join([model] + cells) + " |")
    return "\n".join(lines)


def confusions_table(breakdowns: Dict[str, Dict[str, Dict]], datasets: Sequence[str]) -> str:
    """``breakdowns[model][dataset]["confusions"]`` -> the most frequent mistakes, "true -> predicted (images)"."""
    lines = ["| model | " + " | ".join(datasets) + " |", "|" + "---|" * (len(datasets) + 1)]
    for model, per_dataset in breakdowns.items():
        cells = [", ".join(f"{t} -> {p} ({n})" for t, p, n in per_dataset.get(d, {}).get("confusions", [])) or "-"
                 for d in datasets]
        lines.append("| " + " | ".join([model] + cells) + " |")
    return "\n".join(lines)
