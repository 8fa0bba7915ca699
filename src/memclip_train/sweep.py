"""`python -m memclip_train.sweep`: ablations over the memory knobs, like the thesis's Fig. 5.4.

    python -m memclip_train.sweep --out runs/sweep --grid placement --grid knn
    python -m memclip_train.sweep --out runs/sweep --grid nkeys-vdim --world runs/demo/world
    # the thesis's ablation on real data (one 10k-sample ShareGPT4V shard, Table 4.1's settings) on a 4-GPU node
    python -m memclip_train.sweep --preset thesis --model ViT-B-16-mem --teacher openai \\
        --train-data '/data/shards/sharegpt4v/train/{000000..000009}.tar' --val-data /data/shards/sharegpt4v/val-1k \\
        --eval urban1k --eval-root /data/Urban1k --eval sharegpt4v-1k --eval-root /data/sharegpt4v \\
        --launcher "torchrun --nproc_per_node 4" --out runs/ablation -- --workers 8

Each point distils a student from the teacher with one memory setting (``--memory KEY=VALUE`` of the trainer),
fine-tunes it on long + short captions, and evaluates retrieval on the --eval datasets (default: the synthetic
world's long and short captions). Points that finished are skipped when the sweep runs again with the same
settings (each result records its commands; other settings are refused, naming the difference, unless --force).
Results go to sweep_results.csv/.json and sweep.png. Without --train-data, --world defaults to a synthetic world
generated first (the demo's first stage) and --teacher to the pretrained tiny CLIP that ships with memclip (tag
'synth'). Flags the sweep does not know (or those after ``--``) are training flags of ``python -m
memclip_train.main``, given to both stages after the preset's own.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import math
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import memclip  # noqa: E402
from memclip.atomic_io import atomic_write_json  # noqa: E402
from memclip.weights_io import names_a_path  # noqa: E402
from memclip.errors import InputError

from .error_reporting import add_debug_flag, report_user_errors  # noqa: E402
from .flag_types import integer_list  # noqa: E402
from .eval.retrieval import result_path  # noqa: E402
from .eval.retrieval_sets import DATASETS as RETRIEVAL_DATASETS  # noqa: E402
from .eval.runner import split_variant  # noqa: E402
from .params import build_parser as training_parser  # noqa: E402
from .params import parse_args as parse_training_args  # noqa: E402
from .recipes import (LONGCLIP_FROZEN_TEXT, SHIPPED_TEACHER, DistillRecipe, LongShortRecipe,  # noqa: E402
                      StageRecipe, TextRecipe, stage_config)
from .stages import TRAINER, StageMismatch, canonical_settings, differences, run_command, run_stages  # noqa: E402
from .worlds import DEMO_WORLD, QUICK_WORLD, train_spec, val_shard, world_stage  # noqa: E402

logger = logging.getLogger("memclip_train.sweep")
GRIDS = ("nkeys-vdim", "knn", "placement")
SYNTH_EVAL = ("synth-long", "synth-short")
THESIS_TRAIN_SAMPLES = 1_245_902
"""Training samples per epoch of the thesis's runs (Table 4.1)."""


def thesis_warmup_fraction(epochs: int, global_batch: int, accum: int, warmup: int = 1000) -> float:
    """The thesis code's ``--warmup 1000`` as a share of its run: ``epochs`` x (batches per epoch // ``accum``)
    optimizer steps over 1,245,902 samples. A sweep point runs far fewer steps; the same share keeps its warmup
    short enough for the lr to peak and decay (1000 steps would outlast a whole point)."""
    return warmup / (epochs * (math.ceil(THESIS_TRAIN_SAMPLES / global_batch) // accum))


@dataclass(frozen=True)
class SweepPreset:
    """A named sweep: the grid values and each stage's recipe.

    Attributes:
        n_keys, v_dims, knns: values of the nkeys-vdim and knn grids.
        distill, finetune: the stage recipes; ``distill_task`` is stage 1's task (its loss).
        flags: training flags of both stages (precision, loaders).
        finetune_text: the text side of stage 2 (None: CLIP's 77 tokens, as the thesis).
        description: what the preset reproduces.
        model, teacher: the default memory model and its teacher's weights.
    """

    n_keys: Tuple[int, ...]
    v_dims: Tuple[int, ...]
    knns: Tuple[int, ...]
    distill: StageRecipe
    finetune: StageRecipe
    flags: Tuple[str, ...]
    finetune_text: Optional[TextRecipe]
    description: str
    model: str = "ViT-Tiny-8-mem"
    teacher: str = SHIPPED_TEACHER
    distill_task: DistillRecipe = DistillRecipe()

    @property
    def stage2(self) -> LongShortRecipe:
        """Stage 2's task: the stage-2 recipe (alpha, caption keys) with this preset's text side."""
        return LongShortRecipe(text=self.finetune_text)


PRESETS: Dict[str, SweepPreset] = {
    "synthetic": SweepPreset(
        (16, 32), (128, 256), (4, 8, 16, 32),
        # warmup: 5 of the 126 and 63 steps of the demo world's 4,000 images, as a share of any world's run
        StageRecipe(epochs=2, lr=2e-3, wd=0.05, warmup_fraction=0.04, value_lr=5e-3),
        StageRecipe(epochs=1, lr=2e-4, wd=0.05, warmup_fraction=0.08), ("--precision", "fp32", "--workers", "1"),
        LONGCLIP_FROZEN_TEXT,
        "the demo world's scale: ViT-Tiny-8-mem on CPU, the demo's 248-token stage 2"),
    "thesis": SweepPreset(
        (64, 128, 256), (256, 512, 1024), (8, 16, 32, 64),
        # warmup: the thesis code's 1000 steps as a share of its runs (stage 1: 38 epochs, 20 x 4 GPUs x accum 4;
        # stage 2: 10 epochs, 32 x accum 2 on one GPU), about 2 and 4 steps of a 10k-sample point on 4 GPUs
        StageRecipe(epochs=10, lr=5e-4, batch_size=20, wd=0.1, warmup_fraction=thesis_warmup_fraction(38, 80, 4),
                    accum_freq=4, grad_checkpointing=True),
        StageRecipe(epochs=10, lr=1e-5, batch_size=32, wd=0.1, warmup_fraction=thesis_warmup_fraction(10, 32, 2),
                    trainable=("memory", "visual")),
        ("--precision", "amp_bf16"), None,
        "thesis section 5.3 / Fig. 5.4: 10 epochs on one 10k-sample ShareGPT4V shard with the thesis's settings "
        "(Table 4.1 and its code), stage 2 as section 4.4 (77 tokens, text frozen); n_keys 64 x v_dim 1024, knn 64 "
        "and the four placements are the thesis's, the other n_keys/v_dim values our reading of Fig. 5.4 (its axes "
        "are not in the text)",
        model="ViT-B-16-mem", teacher="openai", distill_task=DistillRecipe("cosine")),
}


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
        raise InputError(f"--model {model} has no memory to sweep")
    base = spec.memory
    if grid == "nkeys-vdim":
        return [SweepPoint(grid, f"n{n}-v{v}", {"n_keys": n, "v_dim": v, "knn": min(base.knn, n)})
                for n in n_keys for v in v_dims]
    if grid == "knn":
        return [SweepPoint(grid, f"knn{k}", {"knn": k}) for k in knns if k <= base.n_keys]
    if grid == "placement":
        depth = spec.model_cfg["vision_cfg"]["layers"]
        return [SweepPoint(grid, name, {"layers": sorted(set(layers))}) for name, layers in placements(depth).items()]
    raise InputError(f"unknown grid {grid!r}; choose from {GRIDS}")


def result_prefix(dataset: str) -> str:
    """Column prefix of an eval dataset's metrics: ``long``/``short`` for the synthetic world, else its name."""
    return dataset.split("-", 1)[1] if dataset in SYNTH_EVAL else dataset


@dataclass(frozen=True)
class SweepData:
    """What every point trains and evaluates on.

    Attributes:
        train, val: ``--train-data`` and ``--val-data`` of both stages (val may be None).
        evaluation: (retrieval dataset spec, its root) pairs, e.g. ("urban1k", "/data/Urban1k").
        flags: training flags of both stages after the preset's (the pass-through flags).
        distill_flags, finetune_flags: training flags of one stage, last.
        launcher: a command that runs ``-m memclip_train.main`` in its place (``torchrun --nproc_per_node 4``);
            empty: in this process.
    """

    train: str
    val: Optional[str]
    evaluation: Tuple[Tuple[str, str], ...]
    flags: Tuple[str, ...] = ()
    distill_flags: Tuple[str, ...] = ()
    finetune_flags: Tuple[str, ...] = ()
    launcher: str = ""


class Sweep:
    """Runs the points of the chosen grids into ``out`` (one folder per point).

    A finished point is reused only when its result records the same commands (its ``settings``); otherwise the
    sweep stops naming the difference, unless ``force`` redoes it.
    """

    def __init__(self, out: Path, model: str, teacher: str, preset: SweepPreset, data: SweepData,
                 force: bool = False) -> None:
        self.out = Path(out)
        self.model = model
        self.teacher = teacher
        self.preset = preset
        self.data = data
        self.force = force

    def _train(self, args: List[str]) -> None:
        if not self.data.launcher:
            run_command("memclip_train.main", args)
            return
        command = [*shlex.split(self.data.launcher), "-m", "memclip_train.main", *args]
        print("$ " + " ".join(shlex.quote(part) for part in command), flush=True)
        subprocess.run(command, check=True)

    def _result_file(self, point: SweepPoint) -> Path:
        return self.out / "points" / f"{point.key}.json"

    def commands(self, point: SweepPoint) -> Dict[str, List[str]]:
        """The point's three commands: ``{"distill": args, "finetune": args, "eval": args}`` (training ones with the
        launcher in front when there is one)."""
        logs = self.out / "runs" / point.key
        d, p = self.data, self.preset
        data = ["--train-data", d.train, *(["--val-data", d.val] if d.val else []), "--logs-dir", str(logs),
                "--log-every-n-steps", "10", "--no-progress", *p.flags]
        distill = stage_config(parse_training_args([*data, "--name", "distill", "--model", self.model, "--pretrained",
                                                    self.teacher]), p.distill, p.distill_task)
        finetune = stage_config(parse_training_args([*data, "--name", "finetune", "--model", self.model,
                                                     "--pretrained", str(logs / "distill" / "final")]),
                                p.finetune, p.stage2)
        distill = [*distill.to_argv(), *point.flags(), *d.flags, *d.distill_flags]
        finetune = [*finetune.to_argv(), *d.flags, *d.finetune_flags]
        evaluation = [arg for spec, root in d.evaluation for arg in ("--dataset", spec, "--data-root", root)]
        evaluate = ["retrieval", "--model", self.model, "--pretrained", str(logs / "finetune" / "final"), "--label",
                    point.key, *evaluation, "--out", str(logs / "eval"), "--no-progress"]
        launcher = shlex.split(d.launcher)
        return {"distill": [*launcher, *distill], "finetune": [*launcher, *finetune], "eval": evaluate}

    def _reusable(self, point: SweepPoint, commands: Dict[str, List[str]]) -> Optional[Dict[str, Any]]:
        """The point's earlier result when it was made by these commands; None when it must be (re)done.

        Raises:
            StageMismatch: the result was made by other commands (or records none), and ``force`` is off.
        """
        result_file = self._result_file(point)
        if not result_file.exists() or self.force:
            return None
        result = json.loads(result_file.read_text())
        recorded = result.get("settings")
        if recorded is None:
            raise StageMismatch(f"point {point.key}: {result_file} does not record the commands that made it (an "
                                "older memclip). Redo it with --force, or write to another --out")
        changed = [f"{stage}: {change}" for stage in commands
                   for change in differences(_canonical(recorded.get(stage, [])), _canonical(commands[stage]))]
        if changed:
            raise StageMismatch(f"point {point.key} in {self.out} was made with other settings: {'; '.join(changed)}. "
                                "Redo it with --force, or write to another --out")
        return result

    def run_point(self, point: SweepPoint) -> Dict[str, Any]:
        result_file = self._result_file(point)
        commands = self.commands(point)
        earlier = self._reusable(point, commands)
        if earlier is not None:
            logger.info("[skip] %s: finished earlier with the same settings (%s)", point.key, result_file)
            return earlier
        logs = self.out / "runs" / point.key
        shutil.rmtree(logs, ignore_errors=True)
        start = time.time()
        launcher = len(shlex.split(self.data.launcher))
        self._train(commands["distill"][launcher:])
        self._train(commands["finetune"][launcher:])
        eval_out = logs / "eval"
        run_command("memclip_train.eval", commands["eval"])
        result = {"grid": point.grid, "point": point.label, "memory": point.memory,
                  "memory_parameters": _memory_parameters(self.model, point.memory),
                  "seconds": round(time.time() - start, 1)}
        for spec, _ in self.data.evaluation:
            folder = result_path(eval_out, *split_variant(spec), point.key).parent
            metrics = json.loads(next(folder.glob("*.json")).read_text())["metrics"]
            for key in ("t2i_R@1", "t2i_R@5", "i2t_R@1", "i2t_R@5"):
                result[f"{result_prefix(spec)}_{key}"] = metrics[key]
        metrics_file = logs / "distill" / "metrics.jsonl"
        distill_val = [json.loads(line) for line in metrics_file.read_text().splitlines()
                       if '"kind": "val"' in line] if metrics_file.exists() else []
        result["distill_val_cosine"] = distill_val[-1]["val_distill_cosine"] if distill_val else None
        result["settings"] = commands
        atomic_write_json(result_file, result)
        return result

    def run(self, points: Sequence[SweepPoint]) -> List[Dict[str, Any]]:
        results = [self.run_point(point) for point in points]
        prefixes = [result_prefix(spec) for spec, _ in self.data.evaluation]
        write_tables(self.out, results, prefixes)
        plot(self.out / "sweep.png", results, prefixes)
        return results


def _canonical(command: List[str]) -> List[str]:
    """A point's command with its training arguments (from ``--train-data`` on) as their parsed config prints them,
    so that two spellings of one config compare equal; the launcher in front, and the eval command, as they are."""
    if "--train-data" not in command:
        return list(command)
    start = command.index("--train-data")
    return command[:start] + canonical_settings([TRAINER, *command[start:]])[1:]


def _memory_parameters(model: str, memory: Dict[str, Any]) -> int:
    built = memclip.create_model(model, memory=memory)
    return sum(p.numel() for p in memclip.memory_parameters(built))


def write_tables(out: Path, results: List[Dict[str, Any]], prefixes: Sequence[str] = ("long", "short")) -> None:
    """sweep_results.json and .csv: one row per point, T2I R@1/5 and I2T R@1 per eval dataset (``prefixes``)."""
    (out / "sweep_results.json").write_text(json.dumps(results, indent=2) + "\n")
    columns = ["grid", "point", "memory_parameters",
               *[f"{p}_{k}" for p in prefixes for k in ("t2i_R@1", "t2i_R@5", "i2t_R@1")],
               "distill_val_cosine", "seconds"]
    with open(out / "sweep_results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)


def plot(path: Path, results: List[Dict[str, Any]], prefixes: Sequence[str] = ("long", "short")) -> Path:
    """One panel per grid: T2I R@1 per point on each eval dataset (thesis Fig. 5.4 style)."""
    grids = [g for g in GRIDS if any(r["grid"] == g for r in results)]
    figure, axes = plt.subplots(1, len(grids), figsize=(4.5 * len(grids), 3.4), squeeze=False)
    for axis, grid in zip(axes[0], grids):
        rows = [r for r in results if r["grid"] == grid]
        x = range(len(rows))
        for prefix, style in zip(prefixes, ("o-", "s--", "^-.", "d:", "v-", "x--")):
            axis.plot(x, [r[f"{prefix}_t2i_R@1"] for r in rows], style, label=f"{prefix} T2I R@1")
        axis.set_xticks(list(x))
        axis.set_xticklabels([r["point"] for r in rows], rotation=30, fontsize=8)
        axis.set_title(grid, fontsize=10)
        axis.set_ylabel("R@1 (%)")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m memclip_train.sweep", description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"))
    parser.add_argument("--grid", action="append", choices=GRIDS, help="grids to run (repeat; default: all)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="synthetic",
                        help="grid values and stage recipes: " + "; ".join(f"{k}: {v.description}"
                                                                            for k, v in PRESETS.items()))
    parser.add_argument("--model", help="the memory model whose knobs vary (default: the preset's)")
    parser.add_argument("--world", type=Path, help="a synthetic world (default: generate one under --out)")
    parser.add_argument("--teacher", help="teacher weights: a tag (openai), checkpoint or folder (default: the "
                                          f"preset's; the synthetic preset's is the shipped '{SHIPPED_TEACHER}')")
    parser.add_argument("--train-data", help="real training shards for every point (instead of a synthetic world)")
    parser.add_argument("--val-data", help="validation shards (the distillation cosine per point)")
    parser.add_argument("--eval", action="append", default=[], metavar="DATASET",
                        help=f"retrieval dataset of the eval program, NAME[@VARIANT] (repeat; one of "
                             f"{sorted(RETRIEVAL_DATASETS)}; default: synth-long and synth-short on the world)")
    parser.add_argument("--eval-root", action="append", default=[], metavar="DIR",
                        help="its folder: one for all --eval datasets, or one per --eval in order")
    parser.add_argument("--n-keys", type=integer_list, help="n_keys values of the nkeys-vdim grid (default: the preset's)")
    parser.add_argument("--v-dims", type=integer_list, help="v_dim values of the nkeys-vdim grid (default: the preset's)")
    parser.add_argument("--knn", type=integer_list, help="knn values of the knn grid (default: the preset's)")
    parser.add_argument("--distill-epochs", type=int, help="stage 1 epochs (default: the preset's)")
    parser.add_argument("--finetune-epochs", type=int, help="stage 2 epochs (default: the preset's)")
    parser.add_argument("--distill-args", default="", help="more training flags for stage 1 only, quoted")
    parser.add_argument("--finetune-args", default="", help="more training flags for stage 2 only, quoted")
    parser.add_argument("--launcher", default="", help="run training as LAUNCHER -m memclip_train.main, e.g. "
                                                       "'torchrun --nproc_per_node 4' (default: in this process)")
    parser.add_argument("--quick", action="store_true", help="a toy world and one epoch per stage")
    parser.add_argument("--force", action="store_true",
                        help="redo points (and the generated world) that were made with other settings")
    return parser


def _evaluation(args: argparse.Namespace, world: Path, parser: argparse.ArgumentParser) -> Tuple[Tuple[str, str], ...]:
    if not args.eval:
        if args.eval_root:
            parser.error("--eval-root without --eval")
        return tuple((spec, str(world)) for spec in SYNTH_EVAL)
    unknown = [spec for spec in args.eval if split_variant(spec)[0] not in RETRIEVAL_DATASETS]
    if unknown:
        parser.error(f"--eval {unknown[0]}: not a retrieval dataset of the eval program {sorted(RETRIEVAL_DATASETS)}")
    roots = args.eval_root if len(args.eval_root) != 1 else args.eval_root * len(args.eval)
    if len(roots) != len(args.eval):
        parser.error(f"give one --eval-root, or one per --eval ({len(args.eval)}); got {len(args.eval_root)}")
    return tuple(zip(args.eval, roots))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    add_debug_flag(parser)
    args, passthrough = parser.parse_known_args(argv)
    passthrough = [arg for arg in passthrough if arg != "--"]
    stage_flags = (shlex.split(args.distill_args), shlex.split(args.finetune_args))
    for flags in stage_flags:  # fail now, not after the first point: main's parser checks every flag
        training_parser().parse_args(["--train-data", "x", *passthrough, *flags])
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(message)s")
    return report_user_errors(parser.prog, args.debug, lambda: sweep(args, passthrough, stage_flags, parser))


def sweep(args: argparse.Namespace, passthrough: List[str], stage_flags: Tuple[List[str], List[str]],
          parser: argparse.ArgumentParser) -> int:
    """Run the sweep that ``main`` parsed; every input is checked before any work."""
    preset = PRESETS[args.preset]
    model = args.model or preset.model
    if args.world is not None and not args.world.exists():
        raise FileNotFoundError(f"--world {args.world} does not exist")
    if args.teacher is not None and names_a_path(args.teacher) and not Path(args.teacher).exists():
        raise FileNotFoundError(f"--teacher {args.teacher} does not exist (give weights, a saved folder or a tag)")
    points = [p for grid in (args.grid or GRIDS)
              for p in grid_points(grid, model, args.n_keys or preset.n_keys, args.v_dims or preset.v_dims,
                                   args.knn or preset.knns)]
    sizes = QUICK_WORLD if args.quick else DEMO_WORLD
    base = args.out / "base"
    world = args.world or base / "world"
    teacher = args.teacher or preset.teacher
    if args.train_data:
        if args.world is not None:
            parser.error("--train-data and --world exclude each other: real shards or a synthetic world")
        if not args.eval:
            parser.error("--train-data: name the retrieval datasets to evaluate with --eval NAME --eval-root DIR")
        if args.teacher is None and args.preset == "synthetic":
            parser.error("--train-data needs --teacher: an open_clip tag of the model's teacher (openai) or weights")
        train, val = args.train_data, args.val_data
        evaluation = _evaluation(args, base / "world", parser)
    else:
        evaluation = _evaluation(args, world, parser)
        if args.world is None:  # the demo's first stage: its world, seed 0
            run_stages([world_stage("synthetic world", world, 0, sizes, progress=False)], base / "timings.json",
                       args.force)
        train, val = train_spec(world, int(sizes["train"])), args.val_data or val_shard(world)
    distill_epochs = args.distill_epochs or (1 if args.quick else preset.distill.epochs)
    recipes = dataclasses.replace(preset, distill=dataclasses.replace(preset.distill, epochs=distill_epochs),
                                  finetune=dataclasses.replace(preset.finetune,
                                                               epochs=args.finetune_epochs or preset.finetune.epochs))
    data = SweepData(train, val, evaluation, tuple(passthrough), tuple(stage_flags[0]), tuple(stage_flags[1]),
                     args.launcher)
    results = Sweep(args.out, model, teacher, recipes, data, args.force).run(points)
    print(f"{len(results)} points -> {args.out / 'sweep_results.csv'}, {args.out / 'sweep.png'}")
    prefixes = [result_prefix(spec) for spec, _ in data.evaluation][:2]
    for row in results:
        print(f"  {row['grid']:<11} {row['point']:<12} " + "  ".join(
            f"{prefix} T2I R@1 {row[f'{prefix}_t2i_R@1']:5.1f}" for prefix in prefixes) + f"  {row['seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
