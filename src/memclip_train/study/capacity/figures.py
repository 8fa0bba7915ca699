"""The slot probe's figures: bits and R@1 against K per arm, and facts stored against parameters and FLOPs."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from ...report.figures import COLOURS  # noqa: E402
from .analysis import label, tradeoff  # noqa: E402


def _colour(summary: Dict[str, Any], arm: str) -> str:
    return COLOURS[summary["arms"].index(arm) % len(COLOURS)]


def plot_against_k(summary: Dict[str, Any], out: Path) -> Path:
    """Two panels at the registered exposures: held-out bits per identity against K (with the log2 K ceiling), and
    held-out K-way R@1 against K, one line per arm with its 95% band."""
    exposures = str(summary["plan"]["exposures"])
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    ks_all: List[int] = []
    for arm, cells in summary["cells"].get(exposures, {}).items():
        ks = sorted(int(k) for k in cells)
        ks_all += ks
        colour = _colour(summary, arm)
        for axis, metric, scale in ((left, "bits", True), (right, "r1", False)):
            values = [cells[str(k)][metric] for k in ks]
            divide = [k if scale else 1 for k in ks]
            axis.plot(ks, [v["value"] / d for v, d in zip(values, divide)], marker="o", color=colour,
                      label=label(summary, arm))
            axis.fill_between(ks, [v["low"] / d for v, d in zip(values, divide)],
                              [v["high"] / d for v, d in zip(values, divide)], color=colour, alpha=0.2)
    if ks_all:
        ks = sorted(set(ks_all))
        left.plot(ks, [math.log2(k) for k in ks], ":", color="0.5", label="log2 K (every name known)")
        for axis in (left, right):
            axis.set_xscale("log", base=2)
            axis.set_xticks(ks, [f"{k:,}" for k in ks])
            axis.minorticks_off()
    left.set_ylabel("held-out bits stored per identity")
    right.set_ylabel("held-out K-way R@1 (%)")
    right.set_ylim(0, 100)
    for axis in (left, right):
        axis.set_xlabel("K (identities = facts)")
        axis.grid(alpha=0.3)
    left.legend(fontsize=8)
    figure.suptitle(f"Slot probe: what each arm stores, {exposures} exposures per identity")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def plot_tradeoff(summary: Dict[str, Any], out: Path) -> Path:
    """Facts stored (held-out bits / log2 K) at the two largest K against the slot's parameters and its FLOPs per
    query, one marker per arm."""
    exposures = summary["plan"]["exposures"]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ticks: Tuple[set, set] = (set(), set())
    for k, marker in zip(summary["plan"]["primary_ks"], ("o", "s")):
        for arm, parameters, flops, facts, low, high in tradeoff(summary, k, exposures):
            colour = _colour(summary, arm)
            ticks[0].add(parameters)
            ticks[1].add(flops)
            for axis, x in zip(axes, (parameters, flops)):
                axis.errorbar([x], [facts], yerr=[[facts - low], [high - facts]], color=colour, marker=marker,
                              markersize=7, capsize=3, linestyle="none", label=f"{label(summary, arm)}, K = {k:,}")
                axis.annotate(arm, (x, facts), textcoords="offset points", xytext=(5, 4), fontsize=7)
    axes[0].set_xlabel("slot parameters")
    axes[1].set_xlabel("slot FLOPs per query")
    for axis, values in zip(axes, ticks):
        axis.set_xscale("log")
        axis.xaxis.set_minor_formatter(NullFormatter())
        ordered = sorted(values)  # a tick within 20% of the one before it would print over it
        shown = [value for index, value in enumerate(ordered) if index == 0 or value > 1.2 * ordered[index - 1]]
        axis.set_xticks(shown, [f"{value / 1e3:,.0f}k" for value in shown])
        axis.minorticks_off()
        axis.set_ylabel("facts stored (held-out bits / log2 K)")
        axis.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        axes[0].legend(handles, labels, fontsize=7)
    figure.suptitle(f"Facts stored against parameters and FLOPs ({exposures} exposures per identity)")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out
