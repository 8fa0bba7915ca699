"""`StudyPipeline`: the study's stages (worlds, distillations, fine-tunings, evaluations), run point by point.

A point is (K, model, seed): its world, its stage-1 distillation when the model has one (once per seed, shared by
every K), its fine-tuning and its marking evaluation, each an ordinary command of the project run by
:mod:`memclip_train.stages` (printed; stages finished with the same settings are skipped; an interrupted training
resumes). The teacher itself is a point of each K too (not fine-tuned: it never saw a marking's name). A finished
point leaves ``points/<key>.json`` with its metrics, per-query ranks and settings, and running the study again skips
it when its settings are the same (other settings are refused, naming the difference, unless ``force``).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from memclip.atomic_io import atomic_write_json

from ..eval.models import ModelRef
from ..params import parse_args
from ..recipes import DistillRecipe, LongShortRecipe, StageRecipe, TextRecipe, stage_config
from ..stages import Stage, StageMismatch, differences, run_stages
from .plan import MODELS, TEACHER_MODEL, StudyPlan

TEACHER = "teacher"


@dataclass(frozen=True)
class Point:
    """One cell of the grid: K, a model key (or ``teacher``) and a seed (None for the teacher)."""

    markings: int
    model: str
    seed: Optional[int] = None

    @property
    def key(self) -> str:
        return f"K{self.markings}-{self.model}" + ("" if self.seed is None else f"-s{self.seed}")

    @property
    def label(self) -> str:
        return self.model if self.seed is None else f"{self.model} s{self.seed}"


def _flat(settings: Any, prefix: str = "") -> List[str]:
    """Nested settings as ``["--plan.alpha", "0.8", ...]``, the form :func:`~memclip_train.stages.differences`
    compares."""
    if isinstance(settings, dict):
        return [item for key in sorted(settings) for item in _flat(settings[key], f"{prefix}{key}.")]
    return [f"--{prefix.rstrip('.')}", json.dumps(settings)]


def _typed_recipes(settings: Dict[str, Any]) -> Dict[str, Any]:
    """Point settings recorded before the stage recipes were typed (their extra trainer flags as an argv tail,
    ``"extra": ["--value-lr", "5e-3"]``) in today's form, so that a point made with the same recipe is reused."""
    plan = settings.get("plan", {})
    if not any(isinstance(plan.get(stage), dict) and "extra" in plan[stage] for stage in ("distill", "finetune")):
        return settings
    plan = dict(plan)
    for stage in ("distill", "finetune"):
        recorded = dict(plan[stage])
        config = parse_args(["--train-data", "x", *recorded.pop("extra")])
        recipe = StageRecipe(**recorded, value_lr=config.model.value_lr, accum_freq=config.optim.accum_freq,
                             grad_checkpointing=config.model.grad_checkpointing, trainable=config.model.trainable)
        plan[stage] = json.loads(json.dumps(asdict(recipe)))
    return {**settings, "plan": plan}


class StudyPipeline:
    """Builds and runs the stages of every point under ``out``.

    Args:
        out: the study's folder.
        plan: sizes, grid and recipes.
        teacher: the pretrained ViT-Tiny-8: a shipped tag (``synth``), a checkpoint file or a saved folder.
        progress: progress bars in the commands.
        log: where the printed commands and skips go.
    """

    def __init__(self, out: Path, plan: StudyPlan, teacher: str, progress: bool = False,
                 log: Callable[[str], None] = print, force: bool = False) -> None:
        self.out = Path(out)
        self.plan = plan
        self.teacher = str(teacher)
        self.progress = progress
        self.log = log
        self.force = force
        self.timing_file = self.out / "timings.json"
        self._forced: set = set()

    # ------------------------------------------------------------------------------------------------ layout
    def world_dir(self, markings: int) -> Path:
        return self.out / "worlds" / f"K{markings}"

    @property
    def distill_world_dir(self) -> Path:
        return self.out / "worlds" / "plain"

    def distill_run(self, seed: int) -> Path:
        return self.out / "logs" / "distill" / f"s{seed}"

    def run_dir(self, point: Point) -> Path:
        return self.out / "logs" / f"K{point.markings}" / f"s{point.seed}" / point.model

    def eval_dir(self, markings: int) -> Path:
        return self.out / "eval" / f"K{markings}"

    def point_file(self, point: Point) -> Path:
        return self.out / "points" / f"{point.key}.json"

    def points(self) -> List[Point]:
        """Every point of the plan: per K, the teacher, then each model and seed."""
        points = []
        for markings in self.plan.markings:
            points.append(Point(markings, TEACHER))
            points += [Point(markings, model, seed) for model in self.plan.models for seed in self.plan.seeds]
        return points

    # ------------------------------------------------------------------------------------------------ stages
    def _quiet(self) -> List[str]:
        return [] if self.progress else ["--no-progress"]

    def _world_stage(self, name: str, folder: Path, sizes: Dict[str, int], markings: int) -> Stage:
        args = ["--out", str(folder), "--seed", str(self.plan.world_seed), "--samples-per-shard",
                str(self.plan.samples_per_shard), "--markings", str(markings), "--workers", "2", "--overwrite"]
        if markings:
            args += ["--marking-family", str(self.plan.family)]
        for key, value in {"retrieval": 0, "segmentation": 0, "pairs-per-pattern": 0, **sizes}.items():
            args += [f"--{key}", str(value)]
        return Stage(name, "memclip_train.synth", args + self._quiet(), folder / "world.json", [folder])

    def world_stage(self, markings: int) -> Stage:
        return self._world_stage(f"world K{markings}", self.world_dir(markings), self.plan.world, markings)

    def distill_world_stage(self) -> Stage:
        return self._world_stage("world for distillation", self.distill_world_dir, self.plan.distill_world, 0)

    @staticmethod
    def train_spec(world: Path) -> str:
        """Brace spec of a written world's training shards."""
        shards = len(json.loads((world / "train" / "sizes.json").read_text()))
        return str(world / "train" / ("{000000..%06d}.tar" % (shards - 1)))

    def _train(self, name: str, run: Path, world: Path, seed: int, flags: List[str], *recipes: object) -> Stage:
        """A training stage: ``flags`` (data and model) on the study's run settings, then ``recipes`` applied."""
        args = ["--val-data", str(world / "val" / "000000.tar"), "--precision", "fp32", "--workers", "1",
                "--seed", str(seed), "--logs", str(run.parent), "--name", run.name, "--log-every-n-steps", "10",
                "--save-every-n-steps", "50", *flags, *self._quiet()]
        args = stage_config(parse_args(args), *recipes).to_argv()
        return Stage(name, "memclip_train.main", args, run / "final" / "memclip_config.json", [run], run_dir=run)

    def distill_stage(self, seed: int) -> Stage:
        """Stage 1 of the memory student (only the memory trains, on images without markings)."""
        model = MODELS["memory"]
        flags = ["--train-data", self.train_spec(self.distill_world_dir), *model.flags(), "--pretrained", self.teacher]
        return self._train(f"distill s{seed}", self.distill_run(seed), self.distill_world_dir, seed, flags,
                           self.plan.distill, DistillRecipe())

    def finetune_stage(self, point: Point) -> Stage:
        """Stage 2 of one model: long + short captions of the K world, families kept in their batches."""
        model = MODELS[point.model]
        start = str(self.distill_run(point.seed) / "final") if model.distilled else self.teacher
        world = self.world_dir(point.markings)
        flags = ["--train-data", self.train_spec(world), "--shuffle-buffer", "1", *model.flags(), "--pretrained", start]
        text = TextRecipe(context=self.plan.long_context, stretch="longclip", train_text=None)
        return self._train(f"finetune {point.key}", self.run_dir(point), world, point.seed, flags,
                           self.plan.finetune, LongShortRecipe(alpha=self.plan.alpha, text=text))

    def weights(self, point: Point) -> ModelRef:
        """What the point evaluates: the teacher, or the model its fine-tuning saved."""
        text = {"context_length": self.plan.long_context, "pos_stretch": "longclip"}
        if point.model == TEACHER:
            return ModelRef(TEACHER_MODEL, self.teacher, text, point.label)
        return ModelRef(MODELS[point.model].model, str(self.run_dir(point) / "final"), text, point.label)

    def eval_stage(self, point: Point) -> Stage:
        """Marking R@1 of the point's model (build it once the weights exist: the result's name depends on them)."""
        ref = self.weights(point)
        context = ref.text_tower
        args = ["markings", "--world", str(self.world_dir(point.markings)), "--model", ref.model, "--pretrained",
                ref.pretrained, "--label", ref.label, "--text-context-length", str(context["context_length"]),
                "--text-pos-stretch", context["pos_stretch"], "--candidates", str(self.plan.candidates),
                "--out", str(self.eval_dir(point.markings)), *self._quiet()]
        result = self.eval_dir(point.markings) / "markings" / f"{ref.tag}.json"
        return Stage(f"evaluate {point.key}", "memclip_train.eval", args, result, [result])

    # ------------------------------------------------------------------------------------------------ running
    def _run(self, stages: List[Stage]) -> Dict[str, float]:
        """Run stages; under ``force`` each is redone once per study run (a stage shared by several points, a world
        or a distillation, is not redone for each of them)."""
        fresh = [stage for stage in stages if stage.name not in self._forced] if self.force else []
        self._forced.update(stage.name for stage in fresh)
        timings = run_stages(fresh, self.timing_file, force=True, log=self.log) if fresh else {}
        rest = [stage for stage in stages if stage not in fresh]
        return {**timings, **(run_stages(rest, self.timing_file, log=self.log) if rest else {})}

    def point_settings(self, point: Point) -> Dict[str, Any]:
        """What makes a point's result: the plan (less the choice of points), the teacher and the model compared."""
        plan = {key: value for key, value in asdict(self.plan).items() if key not in ("markings", "seeds", "models")}
        model = asdict(MODELS[point.model]) if point.model in MODELS else point.model
        return json.loads(json.dumps({"plan": plan, "teacher": self.teacher, "model": model}))

    def run_point(self, point: Point) -> Dict[str, Any]:
        """Run what the point still lacks and write its result; a point finished with the same settings is read back,
        not rerun.

        Raises:
            StageMismatch: the point (or one of its stages) was made with other settings, and ``force`` is off.
        """
        path = self.point_file(point)
        settings = self.point_settings(point)
        if path.is_file() and not self.force:
            stored = json.loads(path.read_text())
            changed = differences(_flat(_typed_recipes(stored.get("settings", {}))), _flat(settings))
            if "settings" not in stored or changed:
                raise StageMismatch(f"point {point.key} in {self.out} was made with other settings: "
                                    f"{'; '.join(changed) or 'none recorded (an older memclip)'}. Redo it with "
                                    "--force, or write to another --out")
            self.log(f"[skip] point {point.key}: finished earlier with the same settings ({path})")
            return stored
        start = time.time()
        # One stage at a time: a training stage's shard list is read from its world once that world exists.
        self._run([self.world_stage(point.markings)])
        command = None
        if point.model != TEACHER:
            if MODELS[point.model].distilled:
                self._run([self.distill_world_stage()])
                self._run([self.distill_stage(point.seed)])
            finetune = self.finetune_stage(point)
            command = finetune.command()
            self._run([finetune])
        evaluation = self.eval_stage(point)
        timings = self._run([evaluation])
        stored = json.loads(evaluation.done.read_text())
        result = {
            "point": point.key, "markings": point.markings, "model": point.model, "seed": point.seed,
            "weights": self.weights(point).pretrained, "metrics": stored["metrics"], "ranks": stored["ranks"],
            "candidates": stored["candidates"], "captions_cut": stored["captions_cut"],
            "seconds": round(time.time() - start, 1),
            "training_seconds": timings.get(f"finetune {point.key}"),
            "finetune_command": command,
            "settings": settings,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, result)
        return result

    def run(self, points: Optional[List[Point]] = None) -> List[Dict[str, Any]]:
        """Run every point (of the plan, or the ones given) in order; returns their results."""
        return [self.run_point(point) for point in (points if points is not None else self.points())]
