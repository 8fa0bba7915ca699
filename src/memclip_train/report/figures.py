"""The report's pictures: training curves, recall bars, blind-pair bars and memory usage (PNG via matplotlib)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .run_metrics import read_metrics, series  # noqa: E402

COLOURS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]
"""One colour per run, model or arm, in the order they are drawn (the plot program uses the same)."""


def training_curves(runs: Dict[str, Path], out: Path) -> Path:
    """One panel per stage (at most four to a row): the training loss per step and, on a second axis, the
    validation R@1 (or distillation cosine) per epoch."""
    columns = min(4, len(runs))
    rows = -(-len(runs) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for axis in axes.flat[len(runs):]:
        axis.set_visible(False)
    for axis, (name, run_dir) in zip(axes.flat, runs.items()):
        records = read_metrics(run_dir)
        axis.plot(*series(records, "train", "loss"), color=COLOURS[0], label="train loss")
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("step")
        axis.set_ylabel("loss", color=COLOURS[0])
        val = [r for r in records if r["kind"] == "val"]
        key = next((k for k in ("val_long_t2i_R@1", "val_t2i_R@1", "val_distill_cosine") if val and k in val[0]),
                   None)
        if key:
            twin = axis.twinx()
            twin.plot(*series(records, "val", key), "o-", color=COLOURS[1], label=key)
            twin.set_ylabel(key.replace("val_", "val "), color=COLOURS[1])
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def grouped_bars(values: Dict[str, Dict[str, float]], out: Path, title: str, ylabel: str,
                 errors: Optional[Dict[str, Dict[str, Sequence[float]]]] = None,
                 baseline: Optional[float] = None) -> Path:
    """Bars grouped by metric (x) with one bar per model; optional (low, high) error bars and a dashed line at the
    score of a model that cannot tell the answers apart (``baseline``)."""
    models = list(values)
    metrics = list(next(iter(values.values())))
    width = 0.8 / len(models)
    x = np.arange(len(metrics))
    figure, axis = plt.subplots(figsize=(max(6, 1.3 * len(metrics) + 2), 4.0))
    for index, model in enumerate(models):
        heights = [values[model][m] for m in metrics]
        yerr = None
        if errors and model in errors:
            lows = [heights[i] - errors[model][m][0] for i, m in enumerate(metrics)]
            highs = [errors[model][m][1] - heights[i] for i, m in enumerate(metrics)]
            yerr = [lows, highs]
        axis.bar(x + (index - (len(models) - 1) / 2) * width, heights, width, label=model,
                 color=COLOURS[index % len(COLOURS)], yerr=yerr, capsize=2)
    if baseline is not None:
        axis.axhline(baseline, color="0.3", linestyle="--", linewidth=1)
    axis.set_xticks(x)
    axis.set_xticklabels(metrics, fontsize=8)
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=7, ncol=min(3, len(models)), loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def competence_curve(curve: Sequence[Dict[str, float]], bars: Dict[str, float], out: Path) -> Path:
    """Zero-shot top-1 (%) of each attribute against training samples seen, with each attribute's bar dashed.

    Args:
        curve: one dict per evaluation, ``{"samples": n, "<attribute>": top-1 %, ...}``.
        bars: attribute -> the top-1 it should reach (drawn in the attribute's colour).
    """
    attributes = [key for key in curve[0] if key not in ("epoch", "samples")] if curve else []
    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    samples = [point["samples"] / 1000 for point in curve]
    for index, attribute in enumerate(attributes):
        colour = COLOURS[index % len(COLOURS)]
        axis.plot(samples, [point[attribute] for point in curve], "o-", color=colour, label=attribute)
        if attribute in bars:
            axis.axhline(bars[attribute], color=colour, linestyle="--", linewidth=1)
    axis.set_xlabel("training samples seen (thousands)")
    axis.set_ylabel("zero-shot top-1, % (dashed: bar)")
    axis.set_ylim(0, 100)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out
