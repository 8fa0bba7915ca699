"""REPORT.md: the results table, bootstrap intervals, pictures, memory usage, run times and a plain reading."""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from safetensors import safe_open

from memclip.pretrained import shipped_record

from ..report.bootstrap import paired_difference, recall_interval
from ..report.figures import grouped_bars, training_curves
from ..report.synth_results import SynthResults
from ..report.tables import fmt, markdown_table
from .pipeline import CONTROL, DISTILLED, OURS, PARALLEL, TEACHER, DemoModel, DemoPipeline

COMPETENCE_COLUMNS: List[Tuple[str, str, str]] = [
    # (header, source, key)
    ("semantic T2I R@1", "semantics", "semantic_t2i_R@1"), ("zero-shot shape", "zeroshot", "synth-shapes"),
    ("zero-shot colour", "zeroshot", "synth-colours"), ("zero-shot size", "zeroshot", "synth-sizes"),
    ("seg mIoU", "segmentation", "mIoU"), ("seg probe mIoU", "segmentation probe", "mIoU"),
    ("pairs, strict", "pairs", "i2t"), ("pairs, per image", "pairs", "i2t_single"),
]
RETRIEVAL_COLUMNS: List[Tuple[str, str, str]] = [
    ("short T2I R@1", "synth-short", "t2i_R@1"), ("short T2I R@5", "synth-short", "t2i_R@5"),
    ("short I2T R@1", "synth-short", "i2t_R@1"), ("long T2I R@1", "synth-long", "t2i_R@1"),
    ("long T2I R@5", "synth-long", "t2i_R@5"), ("long I2T R@1", "synth-long", "i2t_R@1"),
    ("long I2T R@5", "synth-long", "i2t_R@5"),
]
COLUMNS = COMPETENCE_COLUMNS + RETRIEVAL_COLUMNS
# Metrics with per-query hits, so they get bootstrap intervals; the first is the primary comparison's.
PAIRED_METRICS = ("long T2I R@1", "long I2T R@1", "semantic T2I R@1", "short I2T R@1", "zero-shot shape")
COMPARISONS = [(OURS, CONTROL), (OURS, TEACHER), (DISTILLED, TEACHER), (CONTROL, TEACHER), (PARALLEL, CONTROL),
               (PARALLEL, OURS)]


def gate_sizes(weights: Path) -> Dict[str, Dict[str, float]]:
    """Mean and largest |gate| of each parallel-memory block in a saved model folder: ``{block: {"mean", "max"}}``
    (empty for a model whose memory replaces the MLP)."""
    sizes: Dict[str, Dict[str, float]] = {}
    if not Path(weights).is_dir():
        return sizes
    for path in sorted(Path(weights).glob("*.safetensors")):
        with safe_open(str(path), "pt") as tensors:
            for key in tensors.keys():
                match = re.search(r"resblocks\.(\d+)\.mlp\.memory_gate$", key)
                if match:
                    gate = tensors.get_tensor(key).abs()
                    sizes[match.group(1)] = {"mean": float(gate.mean()), "max": float(gate.max())}
    return sizes


def _value(results: SynthResults, label: str, source: str, key: str) -> float:
    if source in ("synth-short", "synth-long"):
        return results.retrieval_metric(label, source, key)
    if source == "semantics":
        return results.semantic_metrics(label)[key]
    if source == "zeroshot":
        return results.zeroshot_top1(label, key)
    if source == "pairs":
        return results.pair_scores(label)[key]
    return results.segmentation_result(label, probe=source == "segmentation probe")[key]


def query_hits(results: SynthResults, label: str) -> Dict[str, List[bool]]:
    """Per metric with queries, whether each query was a hit (the input of the bootstrap)."""
    hits = {f"{source.split('-')[1]} {direction.upper()} R@1": [r <= 1 for r in results.retrieval_ranks(label, source,
                                                                                                      direction)]
            for source in ("synth-short", "synth-long") for direction in ("t2i", "i2t")}
    hits["semantic T2I R@1"] = results.semantic_hits(label, "semantic_t2i_R@1")
    for header, source, key in COMPETENCE_COLUMNS:
        if source == "zeroshot":
            hits[header] = [rank == 0 for rank in results.zeroshot_ranks(label, key)]
    return hits


def collect(results: SynthResults, models: List[DemoModel]) -> Dict[str, Dict[str, Any]]:
    """Per model: the table values, per-query hits, blind pairs per pattern and memory usage."""
    collected = {}
    for model in models:
        label = model.label
        collected[label] = {
            "table": {header: _value(results, label, source, key) for header, source, key in COLUMNS},
            "hits": query_hits(results, label),
            "captions_cut": {source: results.retrieval_detail(label, source, "captions_cut")
                             for source in ("synth-short", "synth-long")},
            "context_length": results.retrieval_detail(label, "synth-long", "context_length"),
            "pairs_per_pattern": results.pair_scores(label)["per_pattern"],
            "memory_usage": results.retrieval_detail(label, "synth-long", "memory_usage"),
            "gates": gate_sizes(model.weights),
            "overlays": results.segmentation_result(label)["overlays"],
        }
    return collected


def _as_ranks(hits: List[bool]) -> List[int]:
    return [1 if hit else 2 for hit in hits]


def bootstrap(collected: Dict[str, Dict[str, Any]], seed: int) -> Dict[str, Any]:
    """95% intervals of every metric with queries, and paired differences for :data:`COMPARISONS`."""
    intervals = {label: {metric: dict(zip(("value", "low", "high"), recall_interval(_as_ranks(hits), seed=seed)))
                         for metric, hits in data["hits"].items()}
                 for label, data in collected.items()}
    differences = []
    for a, b in COMPARISONS:
        if a in collected and b in collected:
            for metric in PAIRED_METRICS:
                result = paired_difference(_as_ranks(collected[a]["hits"][metric]),
                                           _as_ranks(collected[b]["hits"][metric]), seed=seed)
                differences.append({"a": a, "b": b, "metric": metric, **result})
    return {"intervals": intervals, "differences": differences}


def results_table(collected: Dict[str, Dict[str, Any]], columns: List[Tuple[str, str, str]]) -> str:
    rows = [[label] + [fmt(data["table"][h]) for h, _, _ in columns] for label, data in collected.items()]
    return markdown_table(["model"] + [h for h, _, _ in columns], rows)


def _interval(difference: Dict[str, Any]) -> str:
    return f"[{difference['low']:+.1f}, {difference['high']:+.1f}]"


def _gate_sentence(gates: Dict[str, Dict[str, float]]) -> str:
    if not gates:
        return ""
    largest = max(gate["max"] for gate in gates.values())
    mean = sum(gate["mean"] for gate in gates.values()) / len(gates)
    sentence = f" Its gates opened to a mean |gate| of {mean:.3f} (largest {largest:.3f})"
    if largest < 0.05:
        return sentence + (", so each block adds under 5% of the memory's read-out to its MLP output: the memory has "
                           "barely switched on.")
    return sentence + ", so the memory's read-out takes part in every memory block."


def verdict(difference: Dict[str, Any]) -> str:
    """How a paired bootstrap difference (``paired_difference``'s dict) reads, in words."""
    if difference.get("identical"):
        return "the two models are right at rank 1 on exactly the same queries"
    if not difference["significant"]:
        return "within run-to-run noise"
    return "higher, beyond noise" if difference["difference"] > 0 else "lower, beyond noise"


LONG_T2I_WINDOW = (20.0, 80.0)
"""Where the fine-tuned models' long T2I R@1 should land, so that a difference between them has room to show."""


def headroom(values: List[float], window: Tuple[float, float] = LONG_T2I_WINDOW) -> str:
    """Where the fine-tuned models' long T2I R@1 ``values`` fall against ``window``: one sentence."""
    low, high = min(values), max(values)
    span = fmt(low) if low == high else f"{fmt(low)}-{fmt(high)}"
    if low >= window[0] and high <= window[1]:
        where = "inside"
    elif high < window[0]:
        where = "below"
    elif low > window[1]:
        where = "above"
    else:
        where = "partly outside"
    return (f"The fine-tuned models land at {span}, {where} the {window[0]:.0f}-{window[1]:.0f} window that leaves "
            "a difference between them room to show.")


def reading(collected: Dict[str, Dict[str, Any]], stats: Dict[str, Any]) -> List[str]:
    """Plain-language sentences, each backed by a number and, where there are queries, a paired bootstrap interval
    and the difference the run detects with 80% power."""
    def diff(a: str, b: str, metric: str = "long T2I R@1") -> Dict[str, Any]:
        return next(d for d in stats["differences"] if (d["a"], d["b"], d["metric"]) == (a, b, metric))

    def value(label: str, metric: str) -> str:
        return fmt(collected[label]["table"][metric])

    teacher = collected[TEACHER]["table"]
    lines = [f"**The teacher.** The pretrained tiny CLIP names the salient object's shape "
             f"{value(TEACHER, 'zero-shot shape')}% and its colour {value(TEACHER, 'zero-shot colour')}% of the time "
             f"zero-shot (chance {100 / 10:.0f}% and {100 / 11:.0f}%), retrieves an image that fits a short caption "
             f"{value(TEACHER, 'semantic T2I R@1')}% of the time at rank 1, and segments shapes at "
             f"{fmt(teacher['seg mIoU'])} mIoU zero-shot; a linear probe on its patch features reaches "
             f"{fmt(teacher['seg probe mIoU'])}, so its patches carry more of the shapes than its text reads."]
    d = diff(DISTILLED, TEACHER)
    shape = diff(DISTILLED, TEACHER, "zero-shot shape")
    lines.append(f"**Distillation.** The distilled student retrieves long captions at T2I R@1 "
                 f"{value(DISTILLED, 'long T2I R@1')} against the teacher's {value(TEACHER, 'long T2I R@1')} "
                 f"({d['difference']:+.1f} points, 95% interval {_interval(d)}: {verdict(d)}), and names shapes "
                 f"{value(DISTILLED, 'zero-shot shape')}% of the time ({shape['difference']:+.1f}, {_interval(shape)}). "
                 "Stage 1 is meant to copy the teacher with memory in place of two MLPs, so small differences are "
                 "the expected outcome.")
    d = diff(OURS, TEACHER)
    lines.append(f"**Long captions.** Fine-tuning the student on long and short captions moves long-caption T2I R@1 "
                 f"from {value(TEACHER, 'long T2I R@1')} (teacher) to {value(OURS, 'long T2I R@1')} "
                 f"({d['difference']:+.1f}, {_interval(d)}: {verdict(d)}). "
                 + headroom([collected[label]["table"]["long T2I R@1"] for label in (OURS, CONTROL, PARALLEL)
                             if label in collected]))
    d = diff(OURS, CONTROL)
    helped = ("the memory helped beyond what fine-tuning alone gives" if d["significant"] and d["difference"] > 0
              else "the control did better: here the gain comes from fine-tuning, not from the memory"
              if d["significant"] else "this run cannot tell the memory apart from fine-tuning alone")
    lines.append(f"**Memory or fine-tuning?** With the same recipe, data and budget, the fine-tuned student reaches "
                 f"long-caption T2I R@1 {value(OURS, 'long T2I R@1')} and the fine-tuned teacher (the control, no "
                 f"memory) {value(CONTROL, 'long T2I R@1')}: {d['difference']:+.1f} points, {_interval(d)}. With "
                 f"{len(collected[OURS]['hits']['long T2I R@1'])} queries, a true difference of "
                 f"{d['detectable']:.1f} points would be found 80% of the time (1.43 x the interval's half-width); "
                 f"the interval covers the queries of this one run, not seed-to-seed variation. So {helped}.")
    semantic, i2t = diff(OURS, CONTROL, "semantic T2I R@1"), diff(OURS, CONTROL, "short I2T R@1")
    lost = diff(OURS, TEACHER, "short I2T R@1")
    lines.append(f"**Short captions.** Student vs control on short captions: semantic T2I R@1 "
                 f"{semantic['difference']:+.1f} points ({_interval(semantic)}, {verdict(semantic)}), I2T R@1 "
                 f"{i2t['difference']:+.1f} ({_interval(i2t)}, {verdict(i2t)}). Against the teacher, the student's "
                 f"short-caption I2T R@1 moves from {value(TEACHER, 'short I2T R@1')} to {value(OURS, 'short I2T R@1')} "
                 f"({lost['difference']:+.1f}, {_interval(lost)}: {verdict(lost)}); the thesis saw a small loss on "
                 "short captions on real data.")
    if PARALLEL in collected:
        d = diff(PARALLEL, CONTROL)
        lines.append(f"**Parallel memory.** The student with the memory beside each MLP instead of in its place "
                     f"(zero-initialised gate, so it starts as the teacher and skips stage 1), fine-tuned with the "
                     f"same recipe, reaches long-caption T2I R@1 {value(PARALLEL, 'long T2I R@1')} against the "
                     f"control's {value(CONTROL, 'long T2I R@1')}: {d['difference']:+.1f} points, {_interval(d)} "
                     f"({verdict(d)}).{_gate_sentence(collected[PARALLEL]['gates'])}")
    lines.append(f"**Fine-grained pairs and segmentation** carry no interval: the strict pair score is "
                 f"{value(OURS, 'pairs, strict')} for the student and {value(CONTROL, 'pairs, strict')} for the "
                 f"control (a model blind to the difference scores 0), and mIoU is {value(OURS, 'seg mIoU')} vs "
                 f"{value(CONTROL, 'seg mIoU')} zero-shot and {value(OURS, 'seg probe mIoU')} vs "
                 f"{value(CONTROL, 'seg probe mIoU')} with a linear probe on the patch features (the teacher: "
                 f"{value(TEACHER, 'seg probe mIoU')}). Read small differences there as noise.")
    return lines


def _intervals_table(stats: Dict[str, Any]) -> str:
    rows = []
    for d in stats["differences"]:
        primary = (d["a"], d["b"], d["metric"]) == (OURS, CONTROL, PAIRED_METRICS[0])
        label = f"{d['a']} vs {d['b']}" + ("" if primary else " (exploratory)")
        rows.append([label, d["metric"], f"{d['difference']:+.1f}", _interval(d), f"{d['detectable']:.1f}",
                     "yes" if d["significant"] else "no"])
    return markdown_table(["comparison", "metric", "difference (points)", "95% interval", "detectable (80% power)",
                           "beyond noise?"], rows)


def _memory_table(collected: Dict[str, Dict[str, Any]]) -> str:
    rows = []
    for label, data in collected.items():
        for block, usage in sorted(data["memory_usage"].items()):
            gate = data["gates"].get(block)
            rows.append([label, block, f"{100 * usage['fraction_read']:.1f}", f"{usage['kl_from_uniform']:.2f}",
                         f"{gate['mean']:.4f}" if gate else "-"])
    if not rows:
        return "(no model with memory)"
    return markdown_table(["model", "block", "slots read (%)", "KL from uniform (nats)", "mean abs gate (parallel)"],
                          rows)


def teacher_record(weights: str) -> Optional[Dict[str, Any]]:
    """The record of the teacher's weights (command, seed, metrics): the shipped tag's, or the JSON beside an
    exported file; None for weights without one."""
    if Path(weights).is_file():
        record = Path(weights).with_suffix(".json")
        return json.loads(record.read_text()) if record.is_file() else None
    return shipped_record("ViT-Tiny-8", weights)


def _teacher_paragraph(record: Optional[Dict[str, Any]]) -> str:
    if record is None:
        return "The teacher's weights carry no pretraining record."
    metrics = record.get("metrics", {})
    plan = record.get("plan", {})
    held_out = ", ".join(f"{name} {metrics[key]:.1f}" for key, name in (
        ("zeroshot_shape", "zero-shot shape"), ("zeroshot_colour", "zero-shot colour"),
        ("semantic_t2i_R@1", "semantic short T2I R@1"), ("segmentation_mIoU", "segmentation mIoU"))
        if key in metrics)
    scenes = plan.get("samples_per_epoch", 0) * plan.get("epochs", 0)
    return (f"The teacher was pretrained on {scenes:,} fresh synthetic scenes with short captions only "
            f"(`{record.get('command', '?')}`, seed {record.get('seed', '?')}); on its own held-out world it scored "
            f"{held_out or 'no recorded metrics'}.")


def _overlays(collected: Dict[str, Dict[str, Any]], results: SynthResults, figures: Path,
              count: int = 2) -> List[Tuple[str, Path, float]]:
    """The teacher's and the student's overlays of the same images: those the teacher segments best among the
    drawn ones, each with its pixel accuracy."""
    accuracy = {label: results.segmentation_result(label).get("image_accuracy", []) for label in (TEACHER, OURS)}
    drawn = range(len(collected[TEACHER]["overlays"]))
    ranked = sorted(drawn, key=lambda i: -(accuracy[TEACHER][i] or 0) if i < len(accuracy[TEACHER]) else 0)
    links = []
    for label, key in ((TEACHER, "teacher"), (OURS, "student")):
        for index in ranked[:count]:
            target = figures / f"overlay_{key}_{index}.png"
            shutil.copyfile(collected[label]["overlays"][index], target)
            score = accuracy[label][index] if index < len(accuracy[label]) else None
            links.append((label, target, score))
    return links


def _draw_figures(pipeline: DemoPipeline, collected: Dict[str, Dict[str, Any]], stats: Dict[str, Any],
                  figures: Path) -> bool:
    """The report's figures under ``figures``; returns whether a memory-usage figure was drawn (a model has memory)."""
    def bars(metrics: List[str], path: Path, title: str, ylabel: str) -> None:
        grouped_bars({label: {m: data["table"][m] for m in metrics} for label, data in collected.items()}, path,
                     title, ylabel, errors={label: {m: (stats["intervals"][label][m]["low"],
                                                        stats["intervals"][label][m]["high"]) for m in metrics}
                                            for label in collected})

    training_curves(pipeline.training_runs(), figures / "training_curves.png")
    bars(["semantic T2I R@1", "zero-shot shape", "zero-shot colour", "zero-shot size"], figures / "competence.png",
         "Competence on the held-out images (error bars: 95% bootstrap)", "%")
    bars(["short T2I R@1", "short I2T R@1", "long T2I R@1", "long I2T R@1"], figures / "recall.png",
         "Exact-image retrieval on the synthetic world (error bars: 95% bootstrap)", "R@1 (%)")
    patterns = sorted(next(iter(collected.values()))["pairs_per_pattern"])
    grouped_bars({label: {p: data["pairs_per_pattern"][p]["i2t_single"] for p in patterns}
                  for label, data in collected.items()}, figures / "pairs.png",
                 "Blind pairs: share of images that prefer their own caption (dashed: a blind model, 50)", "%",
                 baseline=50.0)
    memory_models = {label: data for label, data in collected.items() if data["memory_usage"]}
    if memory_models:
        blocks = sorted(next(iter(memory_models.values()))["memory_usage"])
        grouped_bars({label: {f"block {b}": 100 * data["memory_usage"][b]["fraction_read"] for b in blocks}
                      for label, data in memory_models.items()}, figures / "memory_usage.png",
                     "Memory slots read at least once on the long-caption retrieval set", "% of slots")
    return bool(memory_models)


def _write_results(pipeline: DemoPipeline, collected: Dict[str, Dict[str, Any]], stats: Dict[str, Any],
                   record: Optional[Dict[str, Any]], elapsed: float) -> None:
    """results.json: every number of the report, the timings, the teacher's record and the plan."""
    out = pipeline.out
    summary = {"models": {label: {k: v for k, v in data.items() if k not in ("hits", "overlays")}
                          for label, data in collected.items()},
               "bootstrap": stats, "timings_seconds": pipeline.timings, "total_seconds": round(elapsed, 1),
               "teacher": {"weights": pipeline.teacher, "record": record},
               "plan": {"world": pipeline.plan.world, "stage2_text": pipeline.plan.stage2_text,
                        "text": asdict(pipeline.plan.text), "alpha": pipeline.plan.alpha}, "seed": pipeline.seed}
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")



def _report_lines(pipeline: DemoPipeline, collected: Dict[str, Dict[str, Any]], stats: Dict[str, Any],
                  record: Optional[Dict[str, Any]], overlay_links: List[Tuple[str, Path, float]], memory_figure: bool,
                  heatmaps: List[Path], elapsed: float) -> List[str]:
    """REPORT.md, line by line."""
    out = pipeline.out
    parallel_arm = (", and a student with the memory beside each MLP (parallel mode) fine-tuned the same way"
                    if pipeline.parallel else "")
    cut = collected[TEACHER]["captions_cut"]["synth-long"]
    total = len(collected[TEACHER]["hits"]["long T2I R@1"])
    lines = [
        "# memclip demo report",
        "",
        f"The whole method on the synthetic world (seed {pipeline.seed}): a pretrained ViT-Tiny-8 CLIP teacher "
        f"(weights: `{pipeline.teacher}`), a ViT-Tiny-8-mem student distilled from it (memory only), the student "
        f"fine-tuned on long + short captions (alpha {pipeline.plan.alpha}), and the control the thesis lacks: the "
        "teacher fine-tuned with the same recipe, data and budget" + parallel_arm + ". World: "
        + ", ".join(f"{k} {v}" for k, v in pipeline.plan.world.items()) + ". " + _teacher_paragraph(record),
        "",
        "## Results",
        "",
        f"All on {total} held-out images. Competence: semantic T2I R@1 counts a short-caption query as a hit when the "
        "top image fits every attribute the caption states; zero-shot top-1 names the salient object's shape, colour "
        "and size with short-caption prompts over the other attributes (chance 10%, 9%, 33%); segmentation is SCLIP's "
        "protocol at the model's own resolution, mIoU over the shape classes (seg probe: a linear classifier fitted "
        f"on the patch features of {pipeline.plan.probe_images} images of another world and scored the same way); "
        "blind pairs: pairs solved (strict: both "
        "images pick their own caption) and images that prefer their own caption (per image).",
        "",
        results_table(collected, COMPETENCE_COLUMNS),
        "",
        f"Exact-image retrieval in %: short = several paraphrases per image, long = one long caption per image. The "
        f"teacher and the distilled student read 77 tokens ({cut} of {total} long captions are cut); the fine-tuned "
        f"models read {pipeline.plan.text.describe()} (`--stage2-text {pipeline.plan.stage2_text}`).",
        "",
        results_table(collected, RETRIEVAL_COLUMNS),
        "",
        "## What the numbers say",
        "",
        *[f"- {line}" for line in reading(collected, stats)],
        "",
        "### Paired bootstrap intervals (1,000 resamples of the queries of this one run; detectable = the difference "
        "found with 80% power, 1.43 x the half-width; only the student vs control on long T2I R@1 is the primary "
        "comparison, the rest are exploratory and uncorrected for multiple comparisons)",
        "",
        _intervals_table(stats),
        "",
        "## Pictures",
        "",
        "![training curves](figures/training_curves.png)",
        "",
        "![competence](figures/competence.png)",
        "",
        "![recall](figures/recall.png)",
        "",
        "![blind pairs per pattern](figures/pairs.png)",
        "",
    ]
    if memory_figure:
        lines += ["![memory usage](figures/memory_usage.png)", ""]
    lines += ["### Segmentation overlays (image | ground truth | prediction; pixel accuracy of the prediction)", ""]
    lines += [f"{label} ({'-' if score is None else f'{score:.0f}%'}): ![overlay]({path.relative_to(out)})  "
              for label, path, score in overlay_links]
    lines += ["", "### Text-to-patch heat maps (teacher, then fine-tuned student; colour = cosine similarity)", ""]
    lines += [f"![heat map]({path.relative_to(out)})" for path in heatmaps]
    lines += ["", "## Memory usage", "", _memory_table(collected), "", "## Run time", "",
              "| stage | seconds |", "|---|---|"]
    lines += [f"| {stage} | {seconds:.0f} |" for stage, seconds in pipeline.timings.items()]
    lines += [f"| total (this invocation) | {elapsed:.0f} |", "",
              "Every stage above is an ordinary command; the demo printed each one as it ran it. "
              "Rerun `make demo` to reuse finished stages, or add `--force` to redo them.", ""]
    return lines


def write_report(pipeline: DemoPipeline, heatmaps: List[Path], elapsed: float) -> Path:
    """Write REPORT.md, results.json and the figures under the demo folder; returns the report's path."""
    figures = pipeline.out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    results = SynthResults.from_json(pipeline.eval_dir / "synth_results.json")
    collected = collect(results, pipeline.models())
    stats = bootstrap(collected, pipeline.seed)
    memory_figure = _draw_figures(pipeline, collected, stats, figures)
    overlay_links = _overlays(collected, results, figures)
    record = teacher_record(pipeline.teacher)
    _write_results(pipeline, collected, stats, record, elapsed)
    path = pipeline.out / "REPORT.md"
    path.write_text("\n".join(_report_lines(pipeline, collected, stats, record, overlay_links, memory_figure,
                                            heatmaps, elapsed)))
    return path
