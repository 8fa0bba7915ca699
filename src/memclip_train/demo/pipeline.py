"""The demo's stages: each is one of the project's ordinary commands (see :mod:`memclip_train.stages`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from ..params import DataConfig, LoggingConfig, ModelConfig, TrainConfig
from ..recipes import SHIPPED_TEACHER, DistillRecipe, stage_config
from ..worlds import train_spec, val_shard, world_stage
from ..stages import Stage, run_command, run_stages
from .plan import DemoPlan


# The table labels of the compared models: the report, its comparisons and the heat maps refer to them by name.
TEACHER = "CLIP teacher"
DISTILLED = "student, distilled"
OURS = "student, fine-tuned (ours)"
CONTROL = "control: teacher fine-tuned"
PARALLEL = "parallel student, fine-tuned"


PROBE_WORLD_SEED_OFFSET = 1000
"""The probe world's seed is the demo's seed plus this: its scenes are never the evaluation world's."""


@dataclass(frozen=True)
class DemoModel:
    """A model the report compares: its table label, architecture and weights (a saved folder, a file or a tag)."""

    label: str
    model: str
    weights: str


class DemoPipeline:
    """Builds the stage list for an output folder and runs it.

    Args:
        teacher: the pretrained teacher's weights: the shipped tag (default) or a file / saved folder, e.g. the one
            ``python -m memclip_train.pretrain`` exports.
    """

    def __init__(self, out: Path, plan: DemoPlan, seed: int = 0, parallel: bool = True, progress: bool = True,
                 teacher: str = SHIPPED_TEACHER) -> None:
        self.out = Path(out)
        self.plan = plan
        self.seed = seed
        self.parallel = parallel
        self.progress = progress
        self.teacher = str(teacher)
        self.world = self.out / "world"
        self.probe_world = self.out / "probe-world"
        self.logs = self.out / "logs"
        self.eval_dir = self.out / "eval"
        self.timings: Dict[str, float] = {}

    # -------------------------------------------------------------------------------------------- stages
    def _train(self, name: str, model: ModelConfig, *recipes: object) -> Stage:
        """A training stage: the demo's data, run folder and seed, ``model``, and ``recipes`` applied in turn."""
        run = self.logs / name
        base = TrainConfig(
            data=DataConfig(train_data=self.train_spec(), val_data=val_shard(self.world), workers=1),
            model=model,
            logging=LoggingConfig(logs=str(self.logs), name=name, log_every_n_steps=5, save_every_n_steps=50,
                                  progress=self.progress),
            seed=self.seed)
        args = stage_config(base, *recipes).to_argv()
        return Stage(name, "memclip_train.main", args, run / "final" / "memclip_config.json", [run], run_dir=run)

    def train_spec(self) -> str:
        """Brace spec of the world's training shards: the shards on disk, or the ones the plan will write."""
        return train_spec(self.world, int(self.plan.world["train"]))

    def models(self) -> List[DemoModel]:
        def final(run: str) -> str:
            return str(self.logs / run / "final")

        models = [
            DemoModel(TEACHER, "ViT-Tiny-8", self.teacher),
            DemoModel(DISTILLED, "ViT-Tiny-8-mem", final("student-distill")),
            DemoModel(OURS, "ViT-Tiny-8-mem", final("student-finetune")),
            DemoModel(CONTROL, "ViT-Tiny-8", final("control-finetune")),
        ]
        if self.parallel:
            models.append(DemoModel(PARALLEL, "ViT-Tiny-8-mem", final("parallel-finetune")))
        return models

    def _world(self, name: str, folder: Path, seed: int, settings: Dict[str, object]) -> Stage:
        return world_stage(name, folder, seed, settings, self.progress)

    def stages(self) -> List[Stage]:
        plan = self.plan
        teacher = self.teacher

        def model(name: str, pretrained: str, **memory: str) -> ModelConfig:
            return ModelConfig(model=name, pretrained=pretrained, precision="fp32", memory=tuple(memory.items()))

        probe_sizes = {"train": 0, "val": 0, "retrieval": 0, "segmentation": plan.probe_images, "pairs-per-pattern": 0}
        stages = [
            self._world("synthetic world", self.world, self.seed, plan.world),
            self._world("probe world", self.probe_world, self.seed + PROBE_WORLD_SEED_OFFSET, probe_sizes),
            self._train("student-distill", model("ViT-Tiny-8-mem", teacher), plan.distill, DistillRecipe()),
            self._train("student-finetune", model("ViT-Tiny-8-mem", str(self.logs / "student-distill" / "final")),
                        plan.finetune, plan.stage2),
            self._train("control-finetune", model("ViT-Tiny-8", teacher), plan.finetune, plan.stage2),
        ]
        if self.parallel:
            # No stage 1 here: with its zero gate the parallel student computes exactly the teacher, so distilling
            # it from that teacher would train nothing (the trainer refuses). It fine-tunes straight from the teacher.
            stages.append(self._train("parallel-finetune", model("ViT-Tiny-8-mem", teacher, mode="parallel"),
                                      plan.finetune, plan.stage2))
        stages.append(self._evaluation())
        return stages

    def training_runs(self) -> Dict[str, Path]:
        """The run folder of every training stage, in pipeline order: ``{stage name: logs/<name>}``."""
        return {stage.name: self.logs / stage.name for stage in self.stages() if stage.resumable}

    def _evaluation(self) -> Stage:
        args = ["synth", "--world", str(self.world), "--out", str(self.eval_dir), "--method", "sclip",
                "--probe-world", str(self.probe_world)]
        for model in self.models():
            args += ["--model", model.model, "--pretrained", str(model.weights), "--label", model.label]
        if not self.progress:
            args.append("--no-progress")
        return Stage("evaluation", "memclip_train.eval", args, self.eval_dir / "synth_results.json",
                     [self.eval_dir / "synth_results.json", self.eval_dir / "synth_tables.md"])

    # -------------------------------------------------------------------------------------------- running
    def run(self, force: bool = False, log: Callable[[str], None] = print) -> Dict[str, float]:
        """Run every stage that has not finished; returns seconds per stage (from ``timings.json`` for skipped)."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.timings = run_stages(self.stages(), self.out / "timings.json", force, log)
        return self.timings

    def heatmap_command(self, model: DemoModel, image: Path, texts: Sequence[str], out: Path) -> List[str]:
        args = ["heatmap", "--model", model.model, "--pretrained", str(model.weights), "--image", str(image),
                "--out", str(out)]
        for text in texts:
            args += ["--text", text]
        return args

    def run_command(self, module: str, args: List[str], log: Callable[[str], None] = print) -> None:
        run_command(module, args, log)


def first_retrieval_images(world: Path, count: int) -> List[Optional[Path]]:
    images = sorted((world / "retrieval" / "image").glob("*.jpg"), key=lambda p: int(p.stem))
    return images[:count]
