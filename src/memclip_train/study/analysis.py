"""The study's numbers: recall per model and K pooled over seeds, paired differences, the pre-registered reading,
and the markdown tables.

Every interval is a 95% percentile two-level bootstrap (1,000 resamples, the demo's
:mod:`memclip_train.report.bootstrap`): a resample draws the seeds with replacement, then the marking queries within
each drawn seed, so it covers seed-to-seed variation as well as the queries. The worlds of all K share their seed, so
query i is the same scene in every world (only its marking differs); one resample of the seed and query indices
serves every model and every K, which makes differences paired and lets them be averaged over K or contrasted between
K. The primary comparison (memory - control) is the registered one; the other comparisons are exploratory.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import numpy as np

from ..report.bootstrap import difference_summary, paired_difference, paired_difference_samples, recall_interval
from .pipeline import TEACHER
from .plan import COMPARISONS, MODELS, PRIMARY

METRICS = {"marking": "marking R@1", "long_t2i": "long-caption T2I R@1"}
TITLES = {"marking": "**marking R@1** (%, mean over seeds [95% two-level bootstrap interval: seeds, then "
                     "queries]; chance {chance:.1f}):",
          "long_t2i": "**long-caption T2I R@1** (%, same images and intervals):"}


def _ranks(results: Sequence[Dict[str, Any]], markings: int, model: str, metric: str) -> np.ndarray:
    """(seeds, queries) ranks of one model at one K, seeds in order."""
    rows = sorted((r for r in results if r["markings"] == markings and r["model"] == model),
                  key=lambda r: -1 if r["seed"] is None else r["seed"])
    return np.asarray([r["ranks"][metric] for r in rows])


def _across_k(results: Sequence[Dict[str, Any]], markings: List[int], a: str, b: str) -> Dict[str, Any]:
    """a - b in marking R@1 averaged over K, and its change from the smallest to the largest K, with intervals."""
    pairs = [(_ranks(results, k, a, "marking"), _ranks(results, k, b, "marking")) for k in markings]
    if not all(len(x) and len(y) for x, y in pairs):
        return {}
    samples = [paired_difference_samples(x, y) for x, y in pairs]
    values = [((x == 1).mean() - (y == 1).mean()) * 100 for x, y in pairs]
    summary = {"mean": difference_summary(np.mean(values), np.mean(samples, axis=0))}
    if len(markings) > 1:
        summary["growth"] = difference_summary(values[-1] - values[0], samples[-1] - samples[0])
    return summary


def summarise(results: Sequence[Dict[str, Any]], costs: Dict[str, Dict[str, int]]) -> Dict[str, Any]:
    """Everything the table, the figure and the reading need, from the points' results.

    Returns:
        {"markings": [K...], "chance": %, "models": [keys, "teacher" last], "costs": ...,
         "recall": {metric: {K: {model: {"value", "low", "high", "seeds": [per-seed %]}}}},
         "differences": {K: {"a-b": paired_difference}}, "across_k": {"a-b": {"mean", "growth"}}, "verdict": ...}
    """
    markings = sorted({r["markings"] for r in results})
    present = {r["model"] for r in results}
    models = [key for key in MODELS if key in present] + ([TEACHER] if TEACHER in present else [])
    recall: Dict[str, Dict[int, Dict[str, Any]]] = {metric: {} for metric in METRICS}
    differences: Dict[int, Dict[str, Any]] = {}
    for k in markings:
        for metric in METRICS:
            cells = {}
            for model in models:
                ranks = _ranks(results, k, model, metric)
                if len(ranks):
                    value, low, high = recall_interval(ranks)
                    cells[model] = {"value": value, "low": low, "high": high,
                                    "seeds": [float((row == 1).mean() * 100) for row in ranks]}
            recall[metric][k] = cells
        differences[k] = {}
        for a, b in COMPARISONS:
            ranks_a, ranks_b = _ranks(results, k, a, "marking"), _ranks(results, k, b, "marking")
            if len(ranks_a) and len(ranks_b):
                differences[k][f"{a}-{b}"] = paired_difference(ranks_a, ranks_b)
    across = {f"{a}-{b}": _across_k(results, markings, a, b) for a, b in COMPARISONS}
    chance = 100.0 / results[0]["candidates"] if results else float("nan")
    over_teacher = beyond_teacher(results, markings, [m for m in models if m != TEACHER])
    return {"markings": markings, "chance": chance, "models": models, "costs": costs, "recall": recall,
            "differences": differences, "across_k": across,
            "verdict": verdict(markings, across, recall["marking"], chance),
            "over_teacher": over_teacher, "learning": learning(markings, over_teacher)}


def beyond_teacher(results: Sequence[Dict[str, Any]], markings: List[int],
                   models: List[str]) -> Dict[int, Dict[str, Any]]:
    """Marking R@1 of each fine-tuned model minus the untrained teacher's at each K (paired over the queries, the
    model's seeds pooled): ``{K: {model: paired_difference}}``, empty where the teacher was not scored.

    Added after the registration: an untrained teacher does not score exactly 1 / C (its names' untrained token
    embeddings sit unevenly close to the images), so "learned" is read against the teacher, not against chance.
    """
    out: Dict[int, Dict[str, Any]] = {}
    for k in markings:
        teacher = _ranks(results, k, TEACHER, "marking")
        if not len(teacher):
            continue
        ranks = {model: _ranks(results, k, model, "marking") for model in models}
        out[k] = {model: paired_difference(rows, teacher) for model, rows in ranks.items() if len(rows)}
    return out


def learning(markings: List[int], over_teacher: Dict[int, Dict[str, Any]]) -> Dict[str, Any]:
    """Which models beat the untrained teacher at which K (the interval of model - teacher above 0), in a sentence."""
    if not over_teacher:
        return {"learned": {}, "sentence": ""}
    learned: Dict[str, List[int]] = {}
    for k in markings:
        for model, diff in over_teacher.get(k, {}).items():
            learned.setdefault(model, [])
            if diff["low"] > 0:
                learned[model].append(k)
    if not any(learned.values()):
        sentence = ("No fine-tuned model's marking R@1 rose above the untrained teacher's at any K: the markings were "
                    "not learned.")
    else:
        parts = [f"{label(model)} at K = {', '.join(str(k) for k in ks)}" for model, ks in learned.items() if ks]
        sentence = "Marking R@1 rose above the untrained teacher's for " + "; ".join(parts) + "."
    return {"learned": learned, "sentence": sentence}


def verdict(markings: List[int], across: Dict[str, Dict[str, Any]], recall: Dict[int, Dict[str, Any]],
            chance: float) -> Dict[str, Any]:
    """The pre-registered reading (docs/study.md): the memory helps when the 95% interval of memory - control,
    averaged over K, lies above 0; it hurts when it lies below; otherwise no difference was detected. Whether the
    difference grows from the smallest to the largest K is read the same way."""
    primary = across.get(f"{PRIMARY[0]}-{PRIMARY[1]}")
    if not primary:
        return {"outcome": "not measured", "sentence": "The primary comparison was not run."}
    mean = primary["mean"]
    outcome = ("the memory helps" if mean["low"] > 0 else "the memory hurts" if mean["high"] < 0
               else "no difference detected")
    sentence = (f"Averaged over K = {', '.join(str(k) for k in markings)}, the memory student's marking R@1 minus the "
                f"control's is {_signed(mean)} points (seeds pooled): {outcome}.")
    if "growth" in primary:
        growth = primary["growth"]
        trend = ("grows" if growth["low"] > 0 else "shrinks" if growth["high"] < 0 else "does not change detectably")
        sentence += (f" From K = {markings[0]} to K = {markings[-1]} the difference {trend} "
                     f"({_signed(growth)} points).")
    learned = {model: [k for k in markings if model in recall[k] and recall[k][model]["low"] > chance]
               for model in PRIMARY}
    if not any(learned.values()):
        sentence += " Neither model's marking R@1 rose above chance at any K: the markings were not learned."
    return {"outcome": outcome, "mean": mean, "growth": primary.get("growth"), "learned_above_chance": learned,
            "sentence": sentence}


def _signed(diff: Dict[str, float]) -> str:
    return f"{diff['difference']:+.1f} [{diff['low']:+.1f}, {diff['high']:+.1f}]"


def _cell(cell: Dict[str, float]) -> str:
    return f"{cell['value']:.1f} [{cell['low']:.1f}, {cell['high']:.1f}]"


def label(model: str) -> str:
    """The model's name in the table and the figure."""
    return MODELS[model].label if model in MODELS else "teacher (not fine-tuned)"


def tables(summary: Dict[str, Any]) -> str:
    """The study's markdown: costs, marking R@1, the paired differences, long-caption T2I R@1 and the reading."""
    markings = summary["markings"]
    columns = " | ".join(f"K = {k}" for k in markings)
    lines = ["| model | vision parameters | memory parameters | vision GFLOPs per image | FLOPs vs control |",
             "|---|---:|---:|---:|---:|"]
    costs = summary["costs"]
    reference = costs.get("control", {}).get("vision_flops")
    for model in summary["models"]:
        if model in costs:
            cost = costs[model]
            ratio = f"{cost['vision_flops'] / reference:.2f}x" if reference else "-"
            lines.append(f"| {label(model)} | {cost['vision_parameters']:,} | {cost['memory_parameters']:,} | "
                         f"{cost['vision_flops'] / 1e9:.3f} | {ratio} |")
    for metric in METRICS:
        lines += ["", TITLES[metric].format(chance=summary["chance"]), "", f"| model | {columns} |",
                  "|---|" + "---|" * len(markings)]
        for model in summary["models"]:
            cells = [_cell(summary["recall"][metric][k][model]) if model in summary["recall"][metric][k] else "-"
                     for k in markings]
            lines.append(f"| {label(model)} | " + " | ".join(cells) + " |")
        if metric == "marking":
            lines += ["", "**Paired differences in marking R@1** (points [95% interval]; the first row is the "
                          "registered comparison, the others are exploratory):", "",
                      f"| comparison | {columns} | mean over K | largest K - smallest K |",
                      "|---|" + "---|" * (len(markings) + 2)]
            for a, b in COMPARISONS:
                key = f"{a}-{b}"
                cells = [_signed(summary["differences"][k][key]) if key in summary["differences"][k] else "-"
                         for k in markings]
                across = summary["across_k"][key]
                cells += [_signed(across[part]) if part in across else "-" for part in ("mean", "growth")]
                tag = "" if (a, b) == PRIMARY else " (exploratory)"
                lines.append(f"| {a} - {b}{tag} | " + " | ".join(cells) + " |")
    lines += ["", f"**Pre-registered reading:** {summary['verdict']['sentence']}"]
    over_teacher = summary["over_teacher"]
    if over_teacher:
        lines += ["", "**Each model minus the untrained teacher**, marking R@1 (points [95% interval]; added after the "
                      "registration, because the untrained teacher does not score exactly chance):", "",
                  f"| model | {columns} |", "|---|" + "---|" * len(markings)]
        for model in summary["models"]:
            if model == TEACHER:
                continue
            cells = [_signed(over_teacher[k][model]) if model in over_teacher.get(k, {}) else "-" for k in markings]
            lines.append(f"| {label(model)} | " + " | ".join(cells) + " |")
        lines += ["", f"**Learned?** {summary['learning']['sentence']}"]
    return "\n".join(lines)
