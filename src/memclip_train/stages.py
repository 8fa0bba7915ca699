"""Pipelines of the project's own commands (the demo, the study, teacher pretraining, the sweep's world): each stage
is one ordinary command, printed and run in-process.

A stage is reused only when the command that made it is this one. Before a stage runs, ``stages.json`` beside the
pipeline's timing file records its command; when it finishes, that it finished. A rerun then:

- skips a finished stage whose recorded command matches (its output still there);
- continues an interrupted one (a training stage with ``--resume latest``) when it matches;
- refuses a stage whose recorded command differs, or whose output exists without a record (an older memclip, another
  program), with :class:`StageMismatch` naming the difference;
- under ``force``, removes every stage's outputs and redoes it.

Flags that change only how a command reports (``--no-progress``) are not part of its settings. A training stage's
settings are compared as the configs they parse into (``--lr 2e-3`` and ``--lr 0.002``, a default spelled out or
left out, are the same setting).

    world = Stage("world", "memclip_train.synth", ["--out", "w", "--seed", "0"], done=Path("w/world.json"),
                  outputs=[Path("w")])
    run_stages([world], Path("out/timings.json"))     # runs it, records it in out/stages.json
    run_stages([world], Path("out/timings.json"))     # [skip] world
    run_stages([seed_1], Path("out/timings.json"))    # StageMismatch: stage 'world' ... --seed 0 (now 1)
"""
from __future__ import annotations

import contextlib
import importlib
import io
import json
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

from memclip.atomic_io import atomic_write_json

from .error_reporting import ProgramFailed, UserError

TRAINER = "memclip_train.main"
RECORD_FILE = "stages.json"
REPORTING_FLAGS = ("--no-progress", "--progress")
"""Flags that change how a command reports, not what it makes: left out of a stage's settings."""


class StageMismatch(UserError):
    """A stage's output was made by another command (or by one nobody recorded); the message names the difference
    and how to redo it."""


@dataclass
class Stage:
    """One command of a pipeline.

    Attributes:
        name: the stage's name in reports, timings and the record (unique within a pipeline).
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

    @property
    def settings(self) -> List[str]:
        """What decides the stage's output: its module and arguments, less :data:`REPORTING_FLAGS`."""
        return [self.module] + [arg for arg in self.args if arg not in REPORTING_FLAGS]

    def command(self, args: Sequence[str] = None) -> str:
        return "python -m " + self.module + " " + " ".join(shlex.quote(a) for a in (self.args if args is None
                                                                                   else args))

    def has_output(self) -> bool:
        return self.done.exists() or (self.resumable and self.run_dir.exists())


def _options(settings: Sequence[str]) -> Dict[str, List[Tuple[str, ...]]]:
    """``["m", "synth", "--seed", "0", "--model", "a", "--model", "b"]`` -> ``{"": [("m", "synth")], "--seed":
    [("0",)], "--model": [("a",), ("b",)]}``: each flag's values, per occurrence (leading words under "")."""
    options: Dict[str, List[Tuple[str, ...]]] = {}
    flag, values = "", []
    for arg in list(settings) + ["--"]:
        if arg.startswith("--") and len(arg) > 2 or arg == "--":
            options.setdefault(flag, []).append(tuple(values))
            flag, values = arg, []
        else:
            values.append(arg)
    return options


def canonical_settings(settings: Sequence[str]) -> List[str]:
    """A training command's settings (``["memclip_train.main", *args]``) as every flag of the config it parses into,
    so that two spellings of one config compare equal (and a change reads ``--seed 0 (now 1)``); other commands, and
    arguments that do not parse, as they are."""
    if list(settings[:1]) != [TRAINER]:
        return list(settings)
    from .params import build_parser, parse_args
    from .train_argv import flag_values, values_to_argv

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            config = parse_args(list(settings[1:]))
    except SystemExit:
        return list(settings)
    parser = build_parser()
    every = [flag[2:] for flag in parser._option_string_actions if flag.startswith("--")]
    return [TRAINER, *values_to_argv(flag_values(config, parser, always=every), parser)]


def differences(recorded: Sequence[str], now: Sequence[str]) -> List[str]:
    """What changed between two settings, flag by flag: ``["--seed 0 (now 1)", "--quick (not given now)"]``."""
    old, new = _options(recorded), _options(now)

    def shown(flag: str, occurrences: List[Tuple[str, ...]]) -> str:
        values = " ".join(" ".join(v) for v in occurrences)
        return f"{flag} {values}".strip() if flag else values

    said = []
    for flag in list(old) + [f for f in new if f not in old]:
        if old.get(flag) == new.get(flag):
            continue
        if flag not in new:
            said.append(f"{shown(flag, old[flag])} (not given now)")
        elif flag not in old:
            said.append(f"{shown(flag, new[flag])} (not given before)")
        else:
            said.append(f"{shown(flag, old[flag])} (now {shown('', new[flag])})")
    return said


class StageRecords:
    """``stages.json``: the settings of every stage a pipeline started, and whether it finished."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: Dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def check(self, stage: Stage) -> bool:
        """Whether ``stage`` has finished with these settings (and can be skipped).

        Raises:
            StageMismatch: its output was made with other settings, or by a command that nobody recorded.
        """
        record = self.data.get(stage.name)
        if record is None:
            if stage.has_output():
                made = stage.done if stage.done.exists() else stage.run_dir
                raise StageMismatch(f"stage '{stage.name}': {made} exists, but {self.path} does not say which command "
                                    "made it (an older memclip, or another program). Redo it with --force, or write "
                                    "to another --out")
            return False
        changed = differences(canonical_settings(record["settings"]), canonical_settings(stage.settings))
        if changed:
            raise StageMismatch(f"stage '{stage.name}' in {self.path.parent} was made with other settings: "
                                f"{'; '.join(changed)}. Redo it with --force, or write to another --out")
        return bool(record.get("finished")) and stage.done.exists()

    def started(self, stage: Stage) -> None:
        self.data[stage.name] = {"settings": stage.settings, "command": stage.command(), "finished": False}
        self._write()

    def finished(self, stage: Stage, seconds: float) -> None:
        self.data[stage.name].update(finished=True, seconds=round(seconds, 1))
        self._write()

    def _write(self) -> None:
        atomic_write_json(self.path, self.data)


PROGRAMS = {"memclip_train.synth": "memclip_train.synth.__main__", "memclip_train.main": "memclip_train.main",
            "memclip_train.eval": "memclip_train.eval.__main__", "memclip_train.pretrain": "memclip_train.pretrain"}
"""The programs a pipeline runs in-process, and the module that holds each one's ``main``."""


def entry(module: str) -> Callable[[Sequence[str]], int]:
    """The ``main`` of one of the project's programs, for running it in-process (imported by name, as ``python -m``
    would: a pipeline runs the programs above it without tying its module to theirs)."""
    if module not in PROGRAMS:
        raise UserError(f"no pipeline entry point for {module}")
    return importlib.import_module(PROGRAMS[module]).main


def run_command(module: str, args: List[str], log: Callable[[str], None] = print) -> None:
    """Print and run one command in-process (no record: for commands whose output is not reused).

    Raises:
        ProgramFailed: the command exited with a non-zero code (which it carries).
    """
    log(f"$ python -m {module} " + " ".join(shlex.quote(a) for a in args))
    code = entry(module)(args)
    if code not in (0, None):
        raise ProgramFailed(f"{module} failed (exit code {code}); see its output above", code)


def run_stages(stages: Sequence[Stage], timing_file: Path, force: bool = False,
               log: Callable[[str], None] = print) -> Dict[str, float]:
    """Run every stage that has not finished with its settings; returns seconds per stage (earlier runs' figures for
    skipped ones, kept in ``timing_file``). The record is ``stages.json`` beside ``timing_file``.

    Raises:
        StageMismatch: a stage's output was made with other settings (or nobody recorded which), without ``force``;
            checked for every stage before any runs.
        ProgramFailed: a stage failed (it carries the stage's exit code).
    """
    records = StageRecords(timing_file.parent / RECORD_FILE)
    finished = {stage.name: records.check(stage) for stage in stages} if not force else {}
    timings = json.loads(timing_file.read_text()) if timing_file.exists() and not force else {}
    for stage in stages:
        if finished.get(stage.name):
            log(f"[skip] {stage.name}: finished earlier with the same settings ({stage.done})")
            continue
        if force:
            for path in stage.outputs:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        args = list(stage.args)
        if stage.resumable and stage.run_dir.exists():
            args += ["--resume", "latest"]
            log(f"[resume] {stage.name}: continuing the interrupted run")
        log(f"\n$ {stage.command(args)}")
        timing_file.parent.mkdir(parents=True, exist_ok=True)
        records.started(stage)
        start = time.time()
        code = entry(stage.module)(args)
        if code not in (0, None):
            raise ProgramFailed(f"stage '{stage.name}' failed (exit code {code}); see the output above", code)
        timings[stage.name] = round(time.time() - start, 1)
        records.finished(stage, timings[stage.name])
        atomic_write_json(timing_file, timings)
    return timings
