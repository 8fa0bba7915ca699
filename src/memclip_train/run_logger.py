"""The run folder's logs: out.log, params.txt, metrics.jsonl, and TensorBoard / W&B when they are installed."""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

from memclip.atomic_io import atomic_write_text

from .params import TrainConfig, format_params

logger = logging.getLogger(__name__)
LOG_FORMAT = "%(asctime)s | %(levelname)s | %(name)s | %(message)s"


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


def _step_of(line: str) -> Optional[int]:
    """The step of a metrics.jsonl line, or None for a line that is not a whole record."""
    try:
        return int(json.loads(line)["step"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


class RunLogger:
    """Writes one JSON object per logged step or evaluation to ``metrics.jsonl`` (rank 0 only).

    Each line holds ``kind`` (train/val), ``step``, ``epoch``, ``time`` and the values.
    """

    def __init__(self, run_dir: Path, config: TrainConfig, is_master: bool) -> None:
        self.run_dir = run_dir
        self.is_master = is_master
        self.tensorboard = None
        self.wandb = None
        if not is_master:
            return
        (run_dir / "params.txt").write_text("\n".join(format_params(config)) + "\n")
        if "tensorboard" in config.logging.report_to:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                logger.warning("--report-to tensorboard: the tensorboard package is not installed; skipping it "
                               "(pip install tensorboard)")
        if "wandb" in config.logging.report_to:
            try:
                import wandb

                self.wandb = wandb
                wandb.init(project=config.logging.wandb_project_name, notes=config.logging.wandb_notes,
                           name=run_dir.name, config=config.to_dict(), resume="allow")
            except ImportError:
                logger.warning("--report-to wandb: the wandb package is not installed; skipping it (pip install "
                               "wandb)")

    def drop_after(self, step: int) -> None:
        """Remove the rows of steps after ``step`` (a resumed run redoes them and logs them again), and any line a kill
        left half-written."""
        path = self.run_dir / "metrics.jsonl"
        if not self.is_master or not path.is_file():
            return
        lines = path.read_text(encoding="utf-8").splitlines()
        kept = [line for line, logged in zip(lines, map(_step_of, lines)) if logged is not None and logged <= step]
        dropped = len(lines) - len(kept)
        if dropped:
            text = "".join(f"{line}\n" for line in kept)
            atomic_write_text(path, text)
            logger.info("metrics.jsonl: dropped %d rows after step %d (redone after the resume)", dropped, step)

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
