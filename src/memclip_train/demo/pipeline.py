"""The demo's stages: each is one of the project's ordinary commands, printed, run in-process, and skipped when its
output already exists (``--force`` redoes them; an interrupted training stage resumes with ``--resume latest``)."""
from __future__ import annotations

import json
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from ..cli import ProgramFailed
from .plan import DemoPlan


@dataclass
class Stage:
    """One command of the pipeline.

    Attributes:
        name: the stage's name in the report.
        module: the ``python -m`` module that runs it.
        args: its arguments.
        done: a file that exists once the stage has finished.
        outputs: what ``--force`` removes before rerunning.
        resumable: a training run, continued with ``--resume latest`` when it was interrupted.
    """

    name: str
    module: str
    args: List[str]
    done: Path
    outputs: List[Path] = field(default_factory=list)
    resumable: bool = False

    def command(self) -> str:
        return "python -m " + self.module + " " + " ".join(shlex.quote(a) for a in self.args)


# The table labels of the compared models: the report, its comparisons and the heat maps refer to them by name.
TEACHER = "CLIP teacher"
DISTILLED = "student, distilled"
OURS = "student, fine-tuned (ours)"
CONTROL = "control: teacher fine-tuned"
PARALLEL = "parallel student, fine-tuned"


@dataclass(frozen=True)
class DemoModel:
    """A model the report compares: its table label, architecture and weights folder."""

    label: str
    model: str
    weights: Path


def _entry(module: str) -> Callable[[Sequence[str]], int]:
    if module == "memclip_train.synth":
        from ..synth.__main__ import main
    elif module == "memclip_train.main":
        from ..main import main
    elif module == "memclip_train.eval":
        from ..eval.__main__ import main
    else:
        raise ValueError(f"no demo entry point for {module}")
    return main


class DemoPipeline:
    """Builds the stage list for an output folder and runs it."""

    def __init__(self, out: Path, plan: DemoPlan, seed: int = 0, parallel: bool = True,
                 progress: bool = True) -> None:
        self.out = Path(out)
        self.plan = plan
        self.seed = seed
        self.parallel = parallel
        self.progress = progress
        self.world = self.out / "world"
        self.logs = self.out / "logs"
        self.eval_dir = self.out / "eval"
        self.timings: Dict[str, float] = {}

    # -------------------------------------------------------------------------------------------- stages
    def _train(self, name: str, recipe_flags: List[str], extra: List[str]) -> Stage:
        run = self.logs / name
        args = ["--train-data", self.train_spec(),
                "--val-data", str(self.world / "val" / "000000.tar"), "--precision", "fp32", "--workers", "1",
                "--seed", str(self.seed), "--logs", str(self.logs), "--name", name, "--log-every-n-steps", "5",
                "--save-every-n-steps", "50", *recipe_flags, *extra]
        if not self.progress:
            args.append("--no-progress")
        return Stage(name, "memclip_train.main", args, run / "final" / "memclip_config.json", [run], resumable=True)

    def train_spec(self) -> str:
        """Brace spec of the world's training shards: the shards on disk, or the ones the plan will write."""
        sizes = self.world / "train" / "sizes.json"
        shards = len(json.loads(sizes.read_text())) if sizes.exists() else -(-self.plan.world["train"] // 1000)
        return str(self.world / "train" / ("{000000..%06d}.tar" % (max(1, shards) - 1)))

    def models(self) -> List[DemoModel]:
        models = [
            DemoModel(TEACHER, "ViT-Tiny-8", self.logs / "teacher" / "final"),
            DemoModel(DISTILLED, "ViT-Tiny-8-mem", self.logs / "student-distill" / "final"),
            DemoModel(OURS, "ViT-Tiny-8-mem", self.logs / "student-finetune" / "final"),
            DemoModel(CONTROL, "ViT-Tiny-8", self.logs / "control-finetune" / "final"),
        ]
        if self.parallel:
            models.append(DemoModel(PARALLEL, "ViT-Tiny-8-mem",
                                    self.logs / "parallel-finetune" / "final"))
        return models

    def stages(self) -> List[Stage]:
        plan = self.plan
        world_args = ["--out", str(self.world), "--seed", str(self.seed), "--workers", "2", "--overwrite"]
        for key, value in plan.world.items():
            world_args += [f"--{key}", str(value)]
        if not self.progress:
            world_args.append("--no-progress")
        long_text = ["--text-context-length", str(plan.long_context), "--text-pos-stretch", "longclip"]
        finetune = ["--long-short-alpha", str(plan.alpha), "--caption-key", "txt", "--long-caption-key", "json.long",
                    *long_text]
        teacher = str(self.logs / "teacher" / "final")
        stages = [
            Stage("synthetic world", "memclip_train.synth", world_args, self.world / "world.json", [self.world]),
            self._train("teacher", plan.teacher.flags(), ["--model", "ViT-Tiny-8", "--caption-key", "txt"]),
            self._train("student-distill", plan.distill.flags(),
                        ["--model", "ViT-Tiny-8-mem", "--distill", "--pretrained", teacher]),
            self._train("student-finetune", plan.finetune.flags(),
                        ["--model", "ViT-Tiny-8-mem", "--pretrained", str(self.logs / "student-distill" / "final"),
                         *finetune]),
            self._train("control-finetune", plan.finetune.flags(),
                        ["--model", "ViT-Tiny-8", "--pretrained", teacher, "--trainable", "visual", *finetune]),
        ]
        if self.parallel:
            # No stage 1 here: with its zero gate the parallel student computes exactly the teacher, so distilling
            # it from that teacher would train nothing (the trainer refuses). It fine-tunes straight from the teacher.
            stages.append(self._train("parallel-finetune", plan.finetune.flags(),
                                      ["--model", "ViT-Tiny-8-mem", "--pretrained", teacher, "--memory",
                                       "mode=parallel", *finetune]))
        stages.append(self._evaluation())
        return stages

    def training_runs(self) -> Dict[str, Path]:
        """The run folder of every training stage, in pipeline order: ``{stage name: logs/<name>}``."""
        return {stage.name: self.logs / stage.name for stage in self.stages() if stage.resumable}

    def _evaluation(self) -> Stage:
        args = ["synth", "--world", str(self.world), "--out", str(self.eval_dir), "--method", "sclip"]
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
        timing_file = self.out / "timings.json"
        timings = json.loads(timing_file.read_text()) if timing_file.exists() and not force else {}
        for stage in self.stages():
            if stage.done.exists() and not force:
                log(f"[skip] {stage.name}: found {stage.done}")
                continue
            if force:
                for path in stage.outputs:
                    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            args = list(stage.args)
            if stage.resumable and (self.logs / stage.name).exists():
                args += ["--resume", "latest"]
                log(f"[resume] {stage.name}: continuing the interrupted run")
            log(f"\n$ {Stage(stage.name, stage.module, args, stage.done).command()}")
            start = time.time()
            code = _entry(stage.module)(args)
            if code not in (0, None):
                raise ProgramFailed(f"stage '{stage.name}' failed (exit code {code}); see the output above", code)
            timings[stage.name] = round(time.time() - start, 1)
            timing_file.write_text(json.dumps(timings, indent=2) + "\n")
        self.timings = timings
        return timings

    def heatmap_command(self, model: DemoModel, image: Path, texts: Sequence[str], out: Path) -> List[str]:
        args = ["heatmap", "--model", model.model, "--pretrained", str(model.weights), "--image", str(image),
                "--out", str(out)]
        for text in texts:
            args += ["--text", text]
        return args

    def run_command(self, module: str, args: List[str], log: Callable[[str], None] = print) -> None:
        log(f"$ {Stage('', module, args, Path()).command()}")
        code = _entry(module)(args)
        if code not in (0, None):
            raise ProgramFailed(f"{module} failed (exit code {code}); see its output above", code)


def first_retrieval_images(world: Path, count: int) -> List[Optional[Path]]:
    images = sorted((world / "retrieval" / "image").glob("*.jpg"), key=lambda p: int(p.stem))
    return images[:count]
