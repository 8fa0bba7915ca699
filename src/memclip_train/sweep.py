"""`python -m memclip_train.sweep`: ablations over the memory knobs, like the thesis's Fig. 5.4.

    python -m memclip_train.sweep --out runs/sweep --grid placement --grid knn
    python -m memclip_train.sweep --out runs/sweep --grid nkeys-vdim --world runs/demo/world \\
        --teacher runs/demo/logs/teacher/final

Each point distils a student from the teacher with one memory setting (``--memory KEY=VALUE`` of the trainer),
fine-tunes it on long + short captions, and evaluates long- and short-caption retrieval. Points that finished are
skipped when the sweep runs again. Results go to sweep_results.csv/.json and sweep.png. Without --world/--teacher,
the synthetic world is generated and a teacher trained first (the demo's first two stages).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import memclip  # noqa: E402

from .cli import add_debug_flag, report_user_errors  # noqa: E402
from .demo.pipeline import DemoPipeline  # noqa: E402
from .demo.plan import DemoPlan, StageRecipe  # noqa: E402

logger = logging.getLogger("memclip_train.sweep")
GRIDS = ("nkeys-vdim", "knn", "placement")


@dataclass(frozen=True)
class SweepPoint:
    """One memory setting: its grid, a short label and the trainer's ``--memory`` overrides."""

    grid: str
    label: str
    memory: Dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.grid}__{self.label}".replace("/", "-").replace(",", "_")

    def flags(self) -> List[str]:
        flags = []
        for name, value in self.memory.items():
            text = ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
            flags += ["--memory", f"{name}={text}"]
        return flags


def placements(depth: int) -> Dict[str, List[int]]:
    """Early, mid, late-sparse and all blocks for a tower of ``depth`` blocks (the thesis's 0-4, 4-8,
    4,6,8,10,11 and 0-11 at depth 12)."""
    if depth >= 12:
        scale = depth / 12
        return {"early": sorted({round(i * scale) for i in range(5)}),
                "mid": sorted({round(i * scale) for i in range(4, 9)}),
                "late-sparse": sorted({min(depth - 1, round(i * scale)) for i in (4, 6, 8, 10, 11)}),
                "all": list(range(depth))}
    half = depth // 2
    return {"early": list(range(max(1, half))),
            "mid": sorted({max(0, half - 1), min(depth - 1, half)}),
            "late-sparse": sorted({min(half, depth - 1), depth - 1}),
            "all": list(range(depth))}


def grid_points(grid: str, model: str, n_keys: Sequence[int], v_dims: Sequence[int],
                knns: Sequence[int]) -> List[SweepPoint]:
    spec = memclip.get_model_spec(model)
    if spec.memory is None:
        raise ValueError(f"--model {model} has no memory to sweep")
    base = spec.memory
    if grid == "nkeys-vdim":
        return [SweepPoint(grid, f"n{n}-v{v}", {"n_keys": n, "v_dim": v, "knn": min(base.knn, n)})
                for n in n_keys for v in v_dims]
    if grid == "knn":
        return [SweepPoint(grid, f"knn{k}", {"knn": k}) for k in knns if k <= base.n_keys]
    if grid == "placement":
        depth = spec.model_cfg["vision_cfg"]["layers"]
        return [SweepPoint(grid, name, {"layers": sorted(set(layers))}) for name, layers in placements(depth).items()]
    raise ValueError(f"unknown grid {grid!r}; choose from {GRIDS}")


class Sweep:
    """Runs the points of the chosen grids into ``out`` (one folder per point)."""

    def __init__(self, out: Path, pipeline: DemoPipeline, model: str, teacher: Path,
                 distill: StageRecipe, finetune: StageRecipe) -> None:
        self.out = Path(out)
        self.pipeline = pipeline
        self.model = model
        self.teacher = teacher
        self.distill = distill
        self.finetune = finetune

    def _result_file(self, point: SweepPoint) -> Path:
        return self.out / "points" / f"{point.key}.json"

    def run_point(self, point: SweepPoint) -> Dict[str, Any]:
        result_file = self._result_file(point)
        if result_file.exists():
            logger.info("[skip] %s: finished earlier (%s)", point.key, result_file)
            return json.loads(result_file.read_text())
        logs = self.out / "runs" / point.key
        shutil.rmtree(logs, ignore_errors=True)
        start = time.time()
        world = self.pipeline.world
        data = ["--train-data", self.pipeline.train_spec(),
                "--val-data", str(world / "val" / "000000.tar"), "--precision", "fp32", "--workers", "1",
                "--logs", str(logs), "--log-every-n-steps", "10", "--no-progress"]
        self.pipeline.run_command("memclip_train.main", [
            *data, "--name", "distill", "--model", self.model, "--distill", "--pretrained", str(self.teacher),
            *self.distill.flags(), *point.flags()])
        self.pipeline.run_command("memclip_train.main", [
            *data, "--name", "finetune", "--model", self.model, "--pretrained", str(logs / "distill" / "final"),
            "--long-short-alpha", "0.8", "--text-context-length", "248", "--text-pos-stretch", "longclip",
            *self.finetune.flags()])
        eval_out = logs / "eval"
        self.pipeline.run_command("memclip_train.eval", [
            "retrieval", "--model", self.model, "--pretrained", str(logs / "finetune" / "final"), "--label",
            point.key, "--dataset", "synth-long", "--dataset", "synth-short", "--data-root", str(world),
            "--out", str(eval_out), "--no-progress"])
        result = {"grid": point.grid, "point": point.label, "memory": point.memory,
                  "memory_parameters": _memory_parameters(self.model, point.memory),
                  "seconds": round(time.time() - start, 1)}
        for dataset in ("synth-long", "synth-short"):
            stored = next((eval_out / "retrieval" / dataset).glob("*.json"))
            metrics = json.loads(stored.read_text())["metrics"]
            short = dataset.split("-")[1]
            for key in ("t2i_R@1", "t2i_R@5", "i2t_R@1", "i2t_R@5"):
                result[f"{short}_{key}"] = metrics[key]
        distill_val = [json.loads(line) for line in (logs / "distill" / "metrics.jsonl").read_text().splitlines()
                       if '"kind": "val"' in line]
        result["distill_val_cosine"] = distill_val[-1]["val_distill_cosine"] if distill_val else None
        result_file.parent.mkdir(parents=True, exist_ok=True)
        result_file.write_text(json.dumps(result, indent=2) + "\n")
        return result

    def run(self, points: Sequence[SweepPoint]) -> List[Dict[str, Any]]:
        results = [self.run_point(point) for point in points]
        write_tables(self.out, results)
        plot(self.out / "sweep.png", results)
        return results


def _memory_parameters(model: str, memory: Dict[str, Any]) -> int:
    built = memclip.create_model(model, memory=memory)
    return sum(p.numel() for p in memclip.memory_parameters(built))


def write_tables(out: Path, results: List[Dict[str, Any]]) -> None:
    (out / "sweep_results.json").write_text(json.dumps(results, indent=2) + "\n")
    columns = ["grid", "point", "memory_parameters", "long_t2i_R@1", "long_t2i_R@5", "long_i2t_R@1",
               "short_t2i_R@1", "short_i2t_R@1", "distill_val_cosine", "seconds"]
    with open(out / "sweep_results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)


def plot(path: Path, results: List[Dict[str, Any]]) -> Path:
    """One panel per grid: long- and short-caption T2I R@1 per point (thesis Fig. 5.4 style)."""
    grids = [g for g in GRIDS if any(r["grid"] == g for r in results)]
    figure, axes = plt.subplots(1, len(grids), figsize=(4.5 * len(grids), 3.4), squeeze=False)
    for axis, grid in zip(axes[0], grids):
        rows = [r for r in results if r["grid"] == grid]
        x = range(len(rows))
        axis.plot(x, [r["long_t2i_R@1"] for r in rows], "o-", label="long T2I R@1")
        axis.plot(x, [r["short_t2i_R@1"] for r in rows], "s--", label="short T2I R@1")
        axis.set_xticks(list(x))
        axis.set_xticklabels([r["point"] for r in rows], rotation=30, fontsize=8)
        axis.set_title(grid, fontsize=10)
        axis.set_ylabel("R@1 (%)")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _ints(text: str) -> List[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memclip_train.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"))
    parser.add_argument("--grid", action="append", choices=GRIDS, help="grids to run (repeat; default: all)")
    parser.add_argument("--model", default="ViT-Tiny-8-mem", help="the memory model whose knobs vary")
    parser.add_argument("--world", type=Path, help="a synthetic world (default: generate one under --out)")
    parser.add_argument("--teacher", type=Path, help="teacher weights (default: train one under --out)")
    parser.add_argument("--n-keys", type=_ints, default=[16, 32], help="n_keys values of the nkeys-vdim grid")
    parser.add_argument("--v-dims", type=_ints, default=[128, 256], help="v_dim values of the nkeys-vdim grid")
    parser.add_argument("--knn", type=_ints, default=[4, 8, 16, 32], help="knn values of the knn grid")
    parser.add_argument("--distill-epochs", type=int, default=2)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a toy world and one epoch per stage")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(message)s")
    return report_user_errors(parser.prog, args.debug, lambda: sweep(args))


def sweep(args: argparse.Namespace) -> None:
    for flag, path in (("--world", args.world), ("--teacher", args.teacher)):
        if path is not None and not path.exists():
            raise FileNotFoundError(f"{flag} {path} does not exist")
    points = [p for grid in (args.grid or GRIDS) for p in grid_points(grid, args.model, args.n_keys, args.v_dims,
                                                                       args.knn)]
    plan = DemoPlan.quick() if args.quick else DemoPlan()
    pipeline = DemoPipeline(args.out / "base", plan, progress=False)
    if args.world is not None:
        pipeline.world = args.world
    if args.world is None or args.teacher is None:
        stages = [s for s in pipeline.stages() if s.name in ("synthetic world", "teacher")]
        stages = [s for s in stages if not (s.name == "synthetic world" and args.world is not None)]
        for stage in stages:
            if not stage.done.exists():
                pipeline.run_command(stage.module, stage.args + (["--resume", "latest"] if stage.resumable and (
                    pipeline.logs / stage.name).exists() else []))
    teacher = args.teacher or pipeline.logs / "teacher" / "final"
    distill = StageRecipe(epochs=args.distill_epochs if not args.quick else 1, lr=2e-3, wd=0.05, warmup=5,
                          extra=("--value-lr", "5e-3"))
    finetune = StageRecipe(epochs=args.finetune_epochs, lr=2e-4, wd=0.05, warmup=5)
    results = Sweep(args.out, pipeline, args.model, teacher, distill, finetune).run(points)
    print(f"{len(results)} points -> {args.out / 'sweep_results.csv'}, {args.out / 'sweep.png'}")
    for row in results:
        print(f"  {row['grid']:<11} {row['point']:<12} long T2I R@1 {row['long_t2i_R@1']:5.1f}  "
              f"short T2I R@1 {row['short_t2i_R@1']:5.1f}  {row['seconds']:.0f}s")


if __name__ == "__main__":
    raise SystemExit(main())
