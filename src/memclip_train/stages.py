"""Pipelines of the project's own commands (the demo, teacher pretraining): each stage is one ordinary command,
printed, run in-process, and skipped when its output already exists (``force`` redoes it; an interrupted training
stage resumes with ``--resume latest``)."""
from __future__ import annotations

import json
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Sequence

from .cli import ProgramFailed


@dataclass
class Stage:
    """One command of a pipeline.

    Attributes:
        name: the stage's name in reports and timings.
        module: the ``python -m`` module that runs it.
        args: its arguments.
        done: a file that exists once the stage has finished.
        outputs: what ``force`` removes before rerunning.
        run_dir: for a training stage, its run folder: continued with ``--resume latest`` when it exists.
    """

    name: str
    module: str
    args: List[str]
    done: Path
    outputs: List[Path] = field(default_factory=list)
    run_dir: Path = None

    @property
    def resumable(self) -> bool:
        return self.run_dir is not None

    def command(self, args: Sequence[str] = None) -> str:
        return "python -m " + self.module + " " + " ".join(shlex.quote(a) for a in (self.args if args is None
                                                                                   else args))


def entry(module: str) -> Callable[[Sequence[str]], int]:
    """The ``main`` of one of the project's programs, for running it in-process."""
    if module == "memclip_train.synth":
        from .synth.__main__ import main
    elif module == "memclip_train.main":
        from .main import main
    elif module == "memclip_train.eval":
        from .eval.__main__ import main
    else:
        raise ValueError(f"no pipeline entry point for {module}")
    return main


def run_command(module: str, args: List[str], log: Callable[[str], None] = print) -> None:
    """Print and run one command in-process.

    Raises:
        ProgramFailed: the command exited with a non-zero code (which it carries).
    """
    log(f"$ python -m {module} " + " ".join(shlex.quote(a) for a in args))
    code = entry(module)(args)
    if code not in (0, None):
        raise ProgramFailed(f"{module} failed (exit code {code}); see its output above", code)


def run_stages(stages: Sequence[Stage], timing_file: Path, force: bool = False,
               log: Callable[[str], None] = print) -> Dict[str, float]:
    """Run every stage that has not finished; returns seconds per stage (earlier runs' figures for skipped ones,
    kept in ``timing_file``).

    Raises:
        ProgramFailed: a stage failed (it carries the stage's exit code).
    """
    timings = json.loads(timing_file.read_text()) if timing_file.exists() and not force else {}
    for stage in stages:
        if stage.done.exists() and not force:
            log(f"[skip] {stage.name}: found {stage.done}")
            continue
        if force:
            for path in stage.outputs:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        args = list(stage.args)
        if stage.resumable and stage.run_dir.exists():
            args += ["--resume", "latest"]
            log(f"[resume] {stage.name}: continuing the interrupted run")
        log(f"\n$ {stage.command(args)}")
        start = time.time()
        code = entry(stage.module)(args)
        if code not in (0, None):
            raise ProgramFailed(f"stage '{stage.name}' failed (exit code {code}); see the output above", code)
        timings[stage.name] = round(time.time() - start, 1)
        timing_file.parent.mkdir(parents=True, exist_ok=True)
        timing_file.write_text(json.dumps(timings, indent=2) + "\n")
    return timings
