"""The run folder's logs: out.log, params.txt, metrics.jsonl, checkpoints/results.jsonl, and TensorBoard / W&B when
``--report-to`` asks for them.

A W&B run takes the run folder's name as its id and resumes with ``--resume`` (as open_clip_train's main does), so
a requeued or resumed run keeps logging to one W&B run; its files go to the run folder (``wandb/``), where a job on
another node finds them.
"""
from __future__ import annotations

import json
import logging
import math
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

from memclip.atomic_io import atomic_write_text
from memclip.provenance import software_versions

from .error_reporting import UserError
from .params import TrainConfig, format_params
from .results_jsonl import RESULTS_FILE, results_record

logger = logging.getLogger(__name__)
LOG_FORMAT = "%(asctime)s | %(levelname)s | %(name)s | %(message)s"
LOGGER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}
"""The package each ``--report-to`` logger needs (each is also memclip's extra of the same name)."""


def _import_logger(name: str) -> Any:
    if name == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter
    import wandb

    return wandb


def check_loggers_installed(report_to: Sequence[str]) -> None:
    """Stop before a run starts when a logger it asks for cannot be imported.

    Raises:
        UserError: naming the loggers and the command that installs them.
    """
    missing = []
    for name in report_to:
        try:
            _import_logger(name)
        except ImportError:
            missing.append(name)
    if missing:
        packages = " ".join(LOGGER_PACKAGES[name] for name in missing)
        raise UserError(f"--report-to {','.join(missing)}: {' and '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} not installed: pip install "
                          f"'memclip[{','.join(missing)}]' (or pip install {packages})")


def wandb_run_id(run_name: str) -> str:
    """The W&B run id of a run folder: its name, with the characters W&B refuses in ids replaced."""
    return re.sub(r"[/\\#?%:]", "-", run_name)


def params_lines(config: TrainConfig, command: Optional[str] = None) -> list:
    """params.txt: the config's ``section.field: value`` lines, the command line (when known) and the software that
    ran it."""
    lines = format_params(config)
    if command:
        lines.append(f"command: {command}")
    lines.extend(f"software.{key}: {value}" for key, value in software_versions().items())
    return lines


class RunFileError(OSError):
    """A file of the run folder could not be written (disk full, a read-only file system); ``filename`` names it."""


class _LogFile(logging.FileHandler):
    """out.log; when it cannot be written (disk full), one line says so on stderr and the file is given up, instead
    of a traceback for every later record (the console keeps the log)."""

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        sys.stderr.write(f"could not write {self.baseFilename} ({getattr(error, 'strerror', None) or error}); the "
                         "log goes on on the console only\n")
        logging.getLogger().removeHandler(self)


def setup_logging(path: Optional[Path], is_master: bool, debug: bool = False) -> Optional[logging.Handler]:
    """Log to the console (INFO, or DEBUG with ``debug``, on the logging process; WARNING elsewhere) and, on the
    logging process, to ``path``.

    Returns the file handler (remove it from the root logger when the run ends), or None.
    """
    root = logging.getLogger()
    root.setLevel((logging.DEBUG if debug else logging.INFO) if is_master else logging.WARNING)
    formatter = logging.Formatter(LOG_FORMAT, datefmt="%Y-%m-%d,%H:%M:%S")
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
               for h in root.handlers):
        console = logging.StreamHandler()
        console.setFormatter(formatter)
        root.addHandler(console)
    if path is None or not is_master:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    file_handler = _LogFile(path, mode="a")
    file_handler.setFormatter(formatter)
    root.addHandler(file_handler)
    return file_handler


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _number_of(line: str, key: str) -> Optional[int]:
    """``key`` (step, epoch) of a JSON-lines record, or None for a line that is not a whole record."""
    try:
        return int(json.loads(line)[key])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _keep_lines(path: Path, number: Callable[[str], Optional[int]], last: int) -> None:
    """Rewrite ``path`` without the records whose number is above ``last`` or missing."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if (n := number(line)) is not None and n <= last]
    if len(kept) < len(lines):
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))
        logger.info("%s: dropped %d rows after %d (redone after the resume)", path.name, len(lines) - len(kept), last)


class RunLogger:
    """Writes one JSON object per logged step or evaluation to ``metrics.jsonl`` (rank 0 only).

    Each line holds ``kind`` (train/val), ``step``, ``epoch``, ``time`` and the values.
    """

    def __init__(self, run_dir: Path, config: TrainConfig, is_master: bool, command: Optional[str] = None) -> None:
        self.run_dir = run_dir
        self.is_master = is_master
        self.tensorboard = None
        self.wandb = None
        if not is_master:
            return
        params = run_dir / "params.txt"
        atomic_write_text(params, "\n".join(params_lines(config, command)) + "\n")
        check_loggers_installed(config.logging.report_to)
        if "tensorboard" in config.logging.report_to:
            self.tensorboard = _import_logger("tensorboard")(str(run_dir / "tensorboard"))
        if "wandb" in config.logging.report_to:
            self.wandb = _import_logger("wandb")
            self.wandb.init(project=config.logging.wandb_project_name, notes=config.logging.wandb_notes,
                            name=run_dir.name, id=wandb_run_id(run_dir.name), dir=str(run_dir),
                            resume="auto" if config.logging.resume else None, config=config.to_dict())
            self.wandb.save(str(params), base_path=str(run_dir), policy="now")

    def drop_after(self, step: int, epoch: Optional[int] = None) -> None:
        """Remove the metrics.jsonl rows of steps after ``step`` and the results.jsonl rows of epochs after ``epoch``
        (a resumed run redoes them and logs them again), and any line a kill left half-written."""
        if not self.is_master:
            return
        _keep_lines(self.run_dir / "metrics.jsonl", lambda line: _number_of(line, "step"), step)
        if epoch is not None:
            _keep_lines(self.run_dir / "checkpoints" / RESULTS_FILE, lambda line: _number_of(line, "epoch"), epoch)

    def log_results(self, epoch: int, metrics: Dict[str, Any], num_samples: Optional[int]) -> None:
        """Append the validation and zero-shot ``metrics`` measured after ``epoch`` to checkpoints/results.jsonl, in
        open_clip_train's names (:mod:`memclip_train.results_jsonl`)."""
        if not self.is_master or not metrics:
            return
        record = {k: _clean(v) for k, v in results_record(epoch, metrics, num_samples).items()}
        with open(self.run_dir / "checkpoints" / RESULTS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def log(self, kind: str, step: int, epoch: int, values: Dict[str, Any]) -> None:
        if not self.is_master:
            return
        record = {"kind": kind, "step": step, "epoch": epoch, "time": round(time.time(), 3)}
        record.update({k: _clean(v) for k, v in values.items()})
        path = self.run_dir / "metrics.jsonl"
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as error:  # disk full, read-only: name the file (a write error carries no name)
            raise RunFileError(error.errno, error.strerror or str(error), str(path)) from error
        numeric = {k: v for k, v in values.items() if isinstance(v, (int, float))}
        if self.tensorboard is not None:
            for key, value in numeric.items():
                self.tensorboard.add_scalar(f"{kind}/{key}", value, step)
        if self.wandb is not None:
            self.wandb.log({f"{kind}/{k}": v for k, v in numeric.items()}, step=step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()
