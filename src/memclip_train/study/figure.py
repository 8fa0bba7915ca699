"""The study's figure: marking R@1 against K, one line per model with its bootstrap band, and beside it each model's
difference from the control of the same compute."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..report.figures import COLOURS  # noqa: E402
from .analysis import label  # noqa: E402
from .pipeline import TEACHER  # noqa: E402
from .plan import COMPARISONS, MODELS  # noqa: E402


_SPREAD = 2 ** 0.03   # on the log-K axis, models drawn a few percent apart, so equal results stay visible


def _colour(model: str) -> str:
    """One colour per model in both panels (the teacher grey)."""
    return "0.45" if model == TEACHER else COLOURS[list(MODELS).index(model) % len(COLOURS)]


def plot(summary: Dict[str, Any], out: Path) -> Path:
    """Write the two-panel PNG to ``out`` and return it."""
    markings = summary["markings"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    count = len(summary["models"])
    for index, model in enumerate(summary["models"]):
        cells = [summary["recall"]["marking"][k].get(model) for k in markings]
        points = [(k, c) for k, c in zip(markings, cells) if c is not None]
        if not points:
            continue
        ks = [k * _SPREAD ** (index - (count - 1) / 2) for k, _ in points]   # side by side, not on top
        colour = _colour(model)
        style = "--" if model == TEACHER else "-"
        left.plot(ks, [c["value"] for _, c in points], style, marker="o", color=colour, label=label(model))
        left.fill_between(ks, [c["low"] for _, c in points], [c["high"] for _, c in points], color=colour, alpha=0.18)
    left.axhline(summary["chance"], color="0.3", linestyle=":", linewidth=1, label="chance")
    left.set_ylabel("marking R@1 (%)")
    left.set_title("Marking recall against the number of markings K", fontsize=10)

    for a, b in COMPARISONS:
        key = f"{a}-{b}"
        points = [(k, summary["differences"][k][key]) for k in markings if key in summary["differences"][k]]
        if b != "control" or not points:
            continue
        ks = [k for k, _ in points]
        colour = _colour(a)
        right.plot(ks, [d["difference"] for _, d in points], "-", marker="o", color=colour, label=f"{a} - control")
        right.fill_between(ks, [d["low"] for _, d in points], [d["high"] for _, d in points], color=colour,
                           alpha=0.18)
    right.axhline(0, color="0.3", linewidth=1)
    right.set_ylabel("difference from the control (points)")
    right.set_title("Paired difference from the control (same FLOPs)", fontsize=10)
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(markings)
        axis.set_xticklabels([str(k) for k in markings])
        axis.set_xlabel("K (named markings in the world)")
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7, frameon=False)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out
