"""The slot probe's numbers: bits and R@1 per arm and K, the registered contrasts with two-level bootstrap intervals,
Holm's correction, and the pre-registered reading (docs/capacity.md).

Every interval resamples seeds, then identities within each drawn seed (:func:`two_level_summary`); per-seed values
and a t-interval over seeds are printed beside it. Arms of one seed share its names, so a contrast differences the
two arms' per-identity values first (paired by seed and identity). With one seed the interval covers the identities
only, and the table says so.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ...report.bootstrap import holm, two_level_summary
from .plan import PRIMARY, SECONDARY, CapacityPlan

ALPHA = 0.05
Arrays = Callable[[Dict[str, Any]], Dict[str, np.ndarray]]


def _records(points: Sequence[Dict[str, Any]], arm: str, k: int, exposures: int) -> Dict[int, Dict[str, Any]]:
    return {p["seed"]: p for p in points if p["arm"] == arm and p["k"] == k and p["exposures"] == exposures}


def _stack(records: Dict[int, Dict[str, Any]], seeds: Sequence[int], arrays: Arrays, name: str) -> np.ndarray:
    """(seeds, K) per-identity values of one array (zeros for a diverged run: it stores nothing)."""
    rows = []
    for seed in seeds:
        data = arrays(records[seed])
        rows.append(data[name] if name in data else np.zeros(records[seed]["k"]))
    return np.stack(rows).astype(np.float64)


def cell(points: Sequence[Dict[str, Any]], arm: str, k: int, exposures: int, arrays: Arrays) -> Dict[str, Any]:
    """One arm at one K: held-out bits (summed over identities), held-out and training R@1 (%), with intervals."""
    records = _records(points, arm, k, exposures)
    if not records:
        return {}
    seeds = sorted(records)
    out = {"seeds": seeds, "lr": records[seeds[0]]["lr"], "value_lr": records[seeds[0]].get("value_lr"),
           "bits": two_level_summary(_stack(records, seeds, arrays, "heldout_bits"), scale=k),
           "r1": two_level_summary(_stack(records, seeds, arrays, "heldout_hit"), scale=100.0),
           "train_r1": two_level_summary(_stack(records, seeds, arrays, "train_hit"), scale=100.0)}
    out["capacity_bits"] = k * math.log2(k)
    out["facts"] = out["bits"]["value"] / math.log2(k)
    return out


def contrast(points: Sequence[Dict[str, Any]], a: str, b: str, k: int, exposures: int,
             arrays: Arrays) -> Dict[str, Any]:
    """Held-out bits of arm ``a`` minus arm ``b`` at K over their common seeds (paired), or {} if none."""
    records_a, records_b = _records(points, a, k, exposures), _records(points, b, k, exposures)
    seeds = sorted(set(records_a) & set(records_b))
    if not seeds:
        return {}
    difference = (_stack(records_a, seeds, arrays, "heldout_bits")
                  - _stack(records_b, seeds, arrays, "heldout_bits"))
    summary = two_level_summary(difference, scale=k)
    base = _stack(records_b, seeds, arrays, "heldout_bits").sum(axis=1).mean()
    return {"a": a, "b": b, "k": k, "exposures": exposures, "seed_list": seeds, **summary,
            "relative": summary["value"] / base if base else float("nan")}


def _decide(family: List[Dict[str, Any]]) -> None:
    """Holm-adjust the family's p-values in place and mark each test: counted when the adjusted p < 0.05 and,
    with two or more seeds, the t-interval over seeds excludes 0 too."""
    present = [test for test in family if test]
    for test, adjusted in zip(present, holm([test["p"] for test in present])):
        test["p_holm"] = adjusted
        t_excludes = len(test["seed_list"]) < 2 or test["t_low"] > 0 or test["t_high"] < 0
        test["counts"] = bool(adjusted < ALPHA and t_excludes)


def verdict(primary: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The registered reading of the primary contrast (memory - MLP in bits at the two largest K)."""
    present = [test for test in primary if test]
    if len(present) < len(primary):
        return {"outcome": "not measured", "sentence": "The primary contrast has not run at both K yet."}
    signs = {int(np.sign(test["value"])) for test in present if test["counts"]}
    if len(signs) == 1 and all(test["counts"] for test in present):
        outcome = "the memory stores more" if signs == {1} else "the memory stores less"
    elif not any(test["counts"] for test in present):
        outcome = "no difference detected"
    else:
        outcome = "mixed"
    parts = [f"K = {test['k']:,}: {_signed(test)} bits (Holm p = {test['p_holm']:.3f}, "
             f"{len(test['seed_list'])} seeds)" for test in present]
    sentence = (f"At equal FLOPs, the project's memory minus the MLP in held-out bits: {'; '.join(parts)}. "
                f"Reading: {outcome}.")
    return {"outcome": outcome, "sentence": sentence}


def summarise(plan: CapacityPlan, points: Sequence[Dict[str, Any]], arrays: Arrays, costs: Dict[str, Any],
              gates: Optional[Dict[str, Any]] = None, checks: Optional[Dict[str, Any]] = None,
              lr: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Everything the tables, figures and reading need."""
    arms = [arm for arm in list(plan.arms) + sorted({p["arm"] for p in points} - set(plan.arms))]
    exposures = sorted({p["exposures"] for p in points} | {plan.exposures})
    cells: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for e in exposures:
        for arm in arms:
            for k in plan.ks:
                found = cell(points, arm, k, e, arrays)
                if found:
                    cells.setdefault(str(e), {}).setdefault(arm, {})[str(k)] = found
    primary = [contrast(points, PRIMARY[0], PRIMARY[1], k, plan.exposures, arrays) for k in plan.primary_ks]
    secondary = [contrast(points, a, b, k, plan.exposures, arrays) for a, b in SECONDARY for k in plan.primary_ks
                 if a in arms and b in arms]
    _decide(primary)
    _decide(secondary)
    checks_exposure = [contrast(points, arm, "mlp", plan.check_k, e, arrays) for e in exposures
                       for arm in arms if arm != "mlp"]
    return {"plan": {"ks": list(plan.ks), "exposures": plan.exposures, "check_k": plan.check_k,
                     "primary_ks": list(plan.primary_ks)},
            "arms": arms, "costs": costs, "cells": cells, "primary": primary, "secondary": secondary,
            "exposure_check": [c for c in checks_exposure if c], "verdict": verdict(primary),
            "gates": gates or {}, "checks": checks or {}, "lr": lr or {}}


# ---------------------------------------------------------------------------------------------------- text
def _signed(stats: Dict[str, Any]) -> str:
    return f"{stats['value']:+,.0f} [{stats['low']:+,.0f}, {stats['high']:+,.0f}]"


def _interval(stats: Dict[str, Any], digits: int = 1) -> str:
    return f"{stats['value']:,.{digits}f} [{stats['low']:,.{digits}f}, {stats['high']:,.{digits}f}]"


def _seeds(stats: Dict[str, Any], digits: int = 0) -> str:
    return " / ".join(f"{value:,.{digits}f}" for value in stats["seeds"])


def label(summary: Dict[str, Any], arm: str) -> str:
    cost = summary["costs"].get(arm, {})
    return cost.get("label", arm)


def tables(summary: Dict[str, Any]) -> str:
    """The markdown: costs, gates, bits and R@1 per arm and K, the contrasts and the reading."""
    lines = ["| arm | slot parameters | FLOPs per query | lr | value lr |", "|---|---:|---:|---:|---:|"]
    for arm in summary["arms"]:
        cost = summary["costs"].get(arm)
        choice = summary["lr"].get(arm, {})
        if cost:
            value_lr = choice.get("value_lr")
            lines.append(f"| {cost['label']} (`{arm}`) | {cost['parameters']:,} | {cost['flops']:,} | "
                         f"{choice.get('lr', float('nan')):g} | {'-' if value_lr is None else f'{value_lr:g}'} |")
    gates = summary["gates"].get("gates", [])
    if gates:
        lines += ["", "**Gates** (checked before the grid):", ""]
        for gate in gates:
            side = ">=" if gate["above"] else "<"
            lines.append(f"- {gate['name']}, {gate['description']}: {100 * gate['value']:.1f}% (needs {side} "
                         f"{100 * gate['threshold']:.0f}%): {'passed' if gate['passed'] else 'FAILED'}")
    for exposures, arms in summary["cells"].items():
        ks = sorted({int(k) for cells in arms.values() for k in cells})
        columns = " | ".join(f"K = {k:,}" for k in ks)
        for metric, title, digits in (
                ("bits", "held-out bits stored (sum over identities; mean over seeds [95% two-level bootstrap])", 0),
                ("r1", "held-out K-way R@1 (%)", 1), ("train_r1", "training-render K-way R@1 (%)", 1)):
            lines += ["", f"**{title}**, {exposures} exposures per identity:", "", f"| arm | {columns} |",
                      "|---|" + "---|" * len(ks)]
            for arm, cells in arms.items():
                row = []
                for k in ks:
                    found = cells.get(str(k))
                    if not found:
                        row.append("-")
                        continue
                    stats = found[metric]
                    seeds = len(found["seeds"])
                    text = _interval(stats, digits)
                    row.append(text + (f" ({seeds} seeds: {_seeds(stats, digits)})" if seeds > 1 else ""))
                lines.append(f"| {label(summary, arm)} | " + " | ".join(row) + " |")
    lines += ["", "**Contrasts** in held-out bits (a - b; 95% two-level bootstrap; t-interval over seeds; detectable "
                  "= the difference found with 80% power, 1.43 x the half-width):", "",
              "| family | a - b | K | seeds | difference | per seed | t-interval | relative to b | detectable | "
              "Holm p | counts? |", "|---|---|---:|---:|---|---|---|---:|---:|---:|---|"]
    for family, tests in (("primary", summary["primary"]), ("secondary", summary["secondary"])):
        for test in tests:
            if not test:
                continue
            t = ("-" if len(test["seed_list"]) < 2 else f"[{test['t_low']:+,.0f}, {test['t_high']:+,.0f}]")
            lines.append(f"| {family} | {test['a']} - {test['b']} | {test['k']:,} | {len(test['seed_list'])} | "
                         f"{_signed(test)} | {_seeds(test)} | {t} | {100 * test['relative']:+.1f}% | "
                         f"{test['detectable']:,.0f} | {test['p_holm']:.3f} | {'yes' if test['counts'] else 'no'} |")
    if summary["exposure_check"]:
        lines += ["", f"**Exposure check** at K = {summary['plan']['check_k']:,} (exploratory; held-out bits, arm "
                      "minus the MLP): does the gap close with more exposures?", "",
                  "| arm - mlp | exposures | seeds | difference | relative to the MLP |", "|---|---:|---:|---|---:|"]
        for test in summary["exposure_check"]:
            lines.append(f"| {test['a']} - mlp | {test['exposures']} | {len(test['seed_list'])} | {_signed(test)} | "
                         f"{100 * test['relative']:+.1f}% |")
    lines += ["", f"**Pre-registered reading:** {summary['verdict']['sentence']}"]
    return "\n".join(lines)


def tradeoff(summary: Dict[str, Any], k: int, exposures: int) -> List[Tuple[str, int, int, float, float, float]]:
    """(arm, parameters, FLOPs per query, facts stored, low, high) at one K: the points of the parameters / FLOPs
    figure (facts stored = held-out bits / log2 K, with its interval)."""
    out = []
    for arm, cells in summary["cells"].get(str(exposures), {}).items():
        found = cells.get(str(k))
        if found and arm in summary["costs"]:
            cost = summary["costs"][arm]
            bits, scale = found["bits"], math.log2(k)
            out.append((arm, cost["parameters"], cost["flops"], found["facts"], bits["low"] / scale,
                        bits["high"] / scale))
    return out
