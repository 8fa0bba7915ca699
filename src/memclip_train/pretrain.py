"""`python -m memclip_train.pretrain --out runs/pretrain [--install]`: pretrain the tiny CLIP teacher that memclip
ships (``memclip.create_model("ViT-Tiny-8", pretrained="synth")``).

Web-scale CLIP sees each image once, with a short alt-text caption. Here the teacher sees a stream of fresh
synthetic scenes (``--train-data synth-stream``, never a fixed set) with their short captions only, in families of
hard negatives. Then its competence is measured on a held-out written world (zero-shot shape, colour and size,
semantic and exact retrieval, segmentation, blind pairs), and its weights are exported in fp16 with a record of the
command, seed and metrics. The zero-shot attributes are also measured on the held-out world after every epoch (to
watch, not to choose: the run always trains its whole schedule); the record keeps that curve and ``competence.png``
draws it. ``--install`` copies the weights and their record into the package (``memclip/pretrained/``). Every
stage is resumable: run the same command again after a kill.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import shlex
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import memclip
from memclip.atomic_io import atomic_write_json
from memclip.pretrained import PRETRAINED_DIR, write_shipped

from .error_reporting import add_debug_flag, report_user_errors
from .report import figures
from .report.synth_results import SynthResults
from .recipes import TEACHER_PRETRAIN, pretrained_teacher_file
from .stages import Stage, run_stages
from .training_zeroshot import SYNTH_METRIC_PREFIXES

MODEL = "ViT-Tiny-8"
TAG = "synth"
LABEL = "pretrained teacher"
LOG_EVERY = 50


@dataclass(frozen=True)
class PretrainPlan:
    """The teacher's pretraining recipe and the held-out world it is measured on.

    Attributes:
        samples_per_epoch, epochs: fresh scenes per epoch and epochs (every epoch draws new scenes).
        batch_size, lr, warmup, wd: contrastive training settings (AdamW, cosine schedule; the defaults are
            :data:`~memclip_train.recipes.TEACHER_PRETRAIN`'s).
        family_size: scenes per family of hard negatives in the stream (see ``synth.stream``).
        world: sizes of the held-out evaluation world (arguments of ``python -m memclip_train.synth``).
        world_seed: its seed (the stream's scenes come from another random stream, so nothing is shared).
    """

    samples_per_epoch: int = 100_000
    epochs: int = TEACHER_PRETRAIN.optim.epochs
    batch_size: int = TEACHER_PRETRAIN.optim.batch_size
    lr: float = TEACHER_PRETRAIN.optim.lr
    warmup: int = TEACHER_PRETRAIN.optim.warmup
    wd: float = TEACHER_PRETRAIN.optim.wd
    family_size: int = 4
    world: Dict[str, int] = field(default_factory=lambda: {
        "train": 0, "val": 500, "retrieval": 1000, "segmentation": 200, "pairs-per-pattern": 30})
    world_seed: int = 1

    @classmethod
    def quick(cls) -> "PretrainPlan":
        """A toy run for tests (seconds)."""
        return cls(samples_per_epoch=128, epochs=1, batch_size=32, warmup=2,
                   world={"train": 0, "val": 32, "retrieval": 40, "segmentation": 4, "pairs-per-pattern": 1})


class PretrainPipeline:
    """The stages of teacher pretraining under one output folder."""

    def __init__(self, out: Path, plan: PretrainPlan, seed: int = 0, workers: int = 1, progress: bool = True) -> None:
        self.out = Path(out)
        self.plan = plan
        self.seed = seed
        self.workers = workers
        self.progress = progress
        self.world = self.out / "world"
        self.run_dir = self.out / "logs" / "teacher"
        self.export_dir = self.out / "export"
        self.eval_dir = self.out / "eval"

    @property
    def weights(self) -> Path:
        return pretrained_teacher_file(self.out)

    def teacher_args(self) -> List[str]:
        """The teacher's training command: :data:`~memclip_train.recipes.TEACHER_PRETRAIN` at the plan's sizes, on
        the scene stream, watched on the held-out world after every epoch."""
        plan = self.plan
        optim = dataclasses.replace(TEACHER_PRETRAIN.optim, epochs=plan.epochs, batch_size=plan.batch_size,
                                    lr=plan.lr, warmup=plan.warmup, wd=plan.wd)
        recipe = dataclasses.replace(TEACHER_PRETRAIN, model=MODEL, optim=optim, workers=self.workers,
                                     log_every_n_steps=LOG_EVERY)
        config = recipe.config(f"synth-stream:family_size={plan.family_size}", logs=str(self.run_dir.parent),
                               name=self.run_dir.name, zeroshot_frequency=1, progress=self.progress)
        data = dataclasses.replace(config.data, train_num_samples=plan.samples_per_epoch,
                                   val_data=str(self.world / "val" / "000000.tar"), zeroshot_synth=str(self.world))
        return dataclasses.replace(config, data=data, seed=self.seed).to_argv()

    def training_stages(self) -> List[Stage]:
        """The held-out world, then the teacher's training run."""
        world_args = ["--out", str(self.world), "--seed", str(self.plan.world_seed), "--workers", "2", "--overwrite"]
        for key, value in self.plan.world.items():
            world_args += [f"--{key}", str(value)]
        return [
            Stage("held-out world", "memclip_train.synth", world_args + self._quiet(), self.world / "world.json",
                  [self.world]),
            Stage("teacher", "memclip_train.main", self.teacher_args(), self.run_dir / "final" / "memclip_config.json",
                  [self.run_dir], run_dir=self.run_dir),
        ]

    def evaluation_stage(self) -> Stage:
        """Competence of the exported (fp16) weights on the held-out world."""
        args = ["synth", "--world", str(self.world), "--out", str(self.eval_dir), "--model", MODEL,
                "--pretrained", str(self.weights), "--label", LABEL]
        return Stage("competence", "memclip_train.eval", args + self._quiet(), self.eval_dir / "synth_results.json",
                     [self.eval_dir])

    def _quiet(self) -> List[str]:
        return [] if self.progress else ["--no-progress"]

    def export(self, record: Dict[str, Any]) -> Path:
        """fp16 weights of the trained teacher with their record (metrics are added once measured)."""
        model = memclip.create_model(str(self.run_dir / "final"))
        return write_shipped(model, self.export_dir, MODEL, TAG, record)


def training_throughput(metrics_file: Path, batch_size: int) -> Dict[str, float]:
    """Seconds spent training and the median samples/s, from the logged throughput of every interval of
    ``LOG_EVERY`` steps (so a run resumed after a kill counts only the time it trained; the stage's wall clock
    would count only its last attempt)."""
    rates = [row["samples_per_second"] for row in map(json.loads, metrics_file.read_text().splitlines())
             if row.get("kind") == "train" and row.get("samples_per_second")]
    if not rates:
        return {}
    seconds = sum(LOG_EVERY * batch_size / rate for rate in rates)
    return {"training_seconds": round(seconds), "median_samples_per_second": round(statistics.median(rates), 1)}


COMPETENCE_BARS = {"synth-shapes": 90.0, "synth-colours": 90.0}
"""Zero-shot top-1 (%) the shipped teacher should reach on the held-out world (docs/teacher.md, "Competence on a
held-out world, against its bars")."""


def competence_curve(metrics_file: Path, samples_per_epoch: int) -> List[Dict[str, float]]:
    """Zero-shot top-1 (%) on the held-out world after each epoch (``--zeroshot-synth``), from the run's
    metrics.jsonl: ``[{"epoch", "samples", "synth-shapes", "synth-colours", "synth-sizes"}, ...]``."""
    curve = []
    for row in map(json.loads, metrics_file.read_text().splitlines()):
        if row.get("kind") != "zeroshot":
            continue
        point = {"epoch": row["epoch"], "samples": row["epoch"] * samples_per_epoch}
        point.update({name: round(100 * row[f"{prefix}-top1"], 1) for name, prefix in SYNTH_METRIC_PREFIXES.items()
                      if f"{prefix}-top1" in row})
        curve.append(point)
    return curve


def competence(eval_dir: Path) -> Dict[str, Any]:
    """The held-out metrics of the pretrained teacher, from ``eval synth``'s results."""
    results = SynthResults.from_json(eval_dir / "synth_results.json")
    metrics = {key: round(value, 2) for key, value in results.semantic_metrics(LABEL).items()}
    for dataset in results.zeroshot_datasets(LABEL):
        metrics[f"{dataset}_top1"] = round(results.zeroshot_top1(LABEL, dataset), 2)
    for dataset in ("synth-short", "synth-long"):
        for key in ("t2i_R@1", "i2t_R@1"):
            metrics[f"{dataset}_{key}"] = round(results.retrieval_metric(LABEL, dataset, key), 2)
    metrics["segmentation_mIoU"] = round(results.segmentation_result(LABEL)["mIoU"], 2)
    metrics["pairs_strict"] = round(results.pair_scores(LABEL)["i2t"], 2)
    return metrics


def software() -> Dict[str, str]:
    import open_clip
    import torch
    return {"python": platform.python_version(), "torch": torch.__version__, "open_clip": open_clip.__version__,
            "memclip": memclip.__version__}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memclip_train.pretrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/pretrain"), help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the scene stream and of training")
    parser.add_argument("--samples-per-epoch", type=int, help="fresh scenes per epoch (default: the plan's)")
    parser.add_argument("--epochs", type=int, help="epochs (default: the plan's)")
    parser.add_argument("--workers", type=int, default=1, help="processes that draw scenes while the model trains")
    parser.add_argument("--quick", action="store_true", help="a toy run (for tests)")
    parser.add_argument("--install", action="store_true",
                        help=f"copy the weights and their record into the package ({PRETRAINED_DIR})")
    parser.add_argument("--force", action="store_true", help="redo every stage")
    parser.add_argument("--no-progress", action="store_true")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return report_user_errors(parser.prog, args.debug, lambda: pretrain(args, argv))


def pretrain(args: argparse.Namespace, argv: Optional[Sequence[str]]) -> int:
    """The pretraining that ``main`` parsed.

    Raises:
        StageMismatch: a stage in --out was made with other settings (``--force`` redoes them).
        ProgramFailed: a stage failed.
    """
    plan = PretrainPlan.quick() if args.quick else PretrainPlan()
    changes = {k: v for k, v in (("samples_per_epoch", args.samples_per_epoch), ("epochs", args.epochs)) if v}
    plan = PretrainPlan(**{**asdict(plan), **changes})
    pipeline = PretrainPipeline(args.out, plan, args.seed, args.workers, progress=not args.no_progress)
    start = time.time()
    training = pipeline.training_stages()
    timings = run_stages(training, args.out / "timings.json", args.force)
    record = {
        "command": "python -m memclip_train.pretrain " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "training_command": training[-1].command(),
        "seed": args.seed,
        "plan": asdict(plan),
        **training_throughput(pipeline.run_dir / "metrics.jsonl", plan.batch_size),
        "software": software(),
    }
    weights = pipeline.weights
    if args.force or not weights.exists():
        pipeline.export(record)
    timings = run_stages([pipeline.evaluation_stage()], args.out / "timings.json", args.force)
    record = json.loads(weights.with_suffix(".json").read_text())
    curve = competence_curve(pipeline.run_dir / "metrics.jsonl", plan.samples_per_epoch)
    record.update(metrics=competence(pipeline.eval_dir), metrics_world={"seed": plan.world_seed, **plan.world},
                  evaluation_seconds=timings.get("competence"), competence_curve=curve)
    if curve:
        print(f"competence curve: {figures.competence_curve(curve, COMPETENCE_BARS, args.out / 'competence.png')}")
    atomic_write_json(weights.with_suffix(".json"), record)
    print(json.dumps(record["metrics"], indent=1))
    if args.install:
        PRETRAINED_DIR.mkdir(parents=True, exist_ok=True)
        for path in (weights, weights.with_suffix(".json")):
            shutil.copy2(path, PRETRAINED_DIR / path.name)
        print(f"installed {weights.name} and its record in {PRETRAINED_DIR}")
    print(f"done in {time.time() - start:.0f}s; weights: {weights}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
