"""Training checkpoints: open_clip's keys plus what an exact resume needs, written atomically.

Keys: ``epoch`` (epochs completed), ``name``, ``state_dict``, ``optimizer``, ``scaler`` (open_clip's), plus
``scheduler`` (the learning-rate schedule's settings), ``step`` (optimizer steps so far), ``samples_seen`` (samples
trained, over all processes), ``batch_in_epoch`` and ``stream_position`` (where a mid-epoch save stands),
``run_shape`` (what those positions mean: :class:`~memclip_train.resume_plan.RunShape`), ``rng`` (torch, CUDA,
Python and NumPy states), ``args`` (the TrainConfig), ``software`` (memclip's version and git commit, python, torch,
open_clip) and ``memclip_config`` (so ``memclip.create_model(name, pretrained=ckpt)`` rebuilds the model). All of
it loads with ``weights_only=True``. A model's weights alone (``save_pretrained``, tags, weight files) are
:mod:`memclip.weights_io`'s.
"""
from __future__ import annotations

import logging
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from memclip.atomic_io import atomic_write
from memclip.provenance import software_versions
from memclip.registry import CONFIG_KEY
from memory_layers.config import TRAINING_STEP_FIELDS
from memory_layers.values_parallel import load_full_optimizer_state_dict

from .error_reporting import UserError

logger = logging.getLogger(__name__)

LATEST = "epoch_latest.pt"
PREVIOUS = "epoch_latest.prev.pt"  # the checkpoint LATEST replaced, kept until the new one has proven finite
_EPOCH_FILE = re.compile(r"epoch_(\d+)\.pt$")


@dataclass
class TrainState:
    """Progress of a run: epochs completed, batches done in the current epoch, optimizer steps, samples trained
    over all processes (the learning-rate schedule's position), stream position."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    stream_position: Dict[str, Any] = field(default_factory=dict)
    samples_seen: int = 0


def capture_rng() -> Dict[str, Any]:
    python = random.getstate()
    numpy = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [python[0], list(python[1]), python[2]],
        "numpy": [numpy[0], torch.from_numpy(numpy[1].astype(np.int64)), numpy[2], numpy[3], numpy[4]],
    }


def restore_rng(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer_state: Dict[str, Any],
                    scheduler_state: Dict[str, Any], scaler: Optional[Any], state: TrainState, name: str,
                    args: Dict[str, Any], run_shape: Optional[Dict[str, Any]] = None) -> None:
    """Write a checkpoint through a temporary file and a rename (a reader never sees half of one).

    ``optimizer_state`` is the optimizer's state dict (with full value tables when they are sharded); ``run_shape``
    what the state's positions mean.
    """
    payload = {
        "epoch": state.epoch,
        "name": name,
        "state_dict": model.state_dict(),
        "optimizer": optimizer_state,
        "scheduler": scheduler_state,
        "step": state.step,
        "samples_seen": state.samples_seen,
        "batch_in_epoch": state.batch_in_epoch,
        "stream_position": state.stream_position,
        "rng": capture_rng(),
        "args": args,
        CONFIG_KEY: model.memclip_spec.to_config(),
        "software": software_versions(),
    }
    if run_shape is not None:
        payload["run_shape"] = run_shape
    if scaler is not None:
        payload["scaler"] = scaler.state_dict()
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    logger.info("saved %s (epoch %d, step %d)", path, state.epoch, state.step)


@dataclass
class Resumed:
    """What :func:`restore_checkpoint` put back: the checkpoint it came from, the progress it records and the
    learning-rate schedule's state (for the trainer, which builds the schedule)."""

    path: Path
    state: TrainState
    scheduler_state: Optional[Dict[str, Any]] = None


def config_differences(saved: Any, now: Any, prefix: str = "") -> List[str]:
    """``["memory.knn 4 -> 2", ...]``: the leaves where two model configurations differ."""
    if isinstance(saved, dict) and isinstance(now, dict):
        return [difference for key in sorted(set(saved) | set(now), key=str)
                for difference in config_differences(saved.get(key), now.get(key), f"{prefix}{key}.")]
    if isinstance(saved, (list, tuple)) and isinstance(now, (list, tuple)) and list(saved) == list(now):
        return []
    return [] if saved == now else [f"{prefix.rstrip('.')} {saved} -> {now}"]


def _groups(param_groups: List[Dict[str, Any]]) -> List[str]:
    return [f"{group.get('name', index)} ({len(group['params'])} tensors)" for index, group in enumerate(param_groups)]


def restore_checkpoint(path: Path, checkpoint: Dict[str, Any], model: torch.nn.Module,
                       optimizer: torch.optim.Optimizer, scaler: Optional[Any], model_name: str,
                       accept_changes: bool = False) -> Resumed:
    """The mirror of :func:`save_checkpoint`: put ``checkpoint`` (read from ``path``) back into the run's model,
    optimizer (full value tables go back to this rank's shards), scaler and random number generators.

    Raises:
        UserError: the checkpoint is of another ``--model``, does not fit this run's model (memory or text
            settings), was trained with another model configuration (``--memory knn=2``: unless ``accept_changes``;
            the knobs of ``memory_layers.config.TRAINING_STEP_FIELDS``, ``sparse_value_grad`` and
            ``values_parallel_group_size``, may change freely),
            or its optimizer holds other parameter groups (``--trainable``, ``--lock-*``); the message names both.
    """
    theirs = checkpoint.get("args", {}).get("model", {}).get("model")
    if theirs is not None and theirs != model_name:
        raise UserError(f"--resume {path} holds a --model {theirs} run, not --model {model_name}: resume it with "
                        f"--model {theirs}")
    spec = getattr(model, "memclip_spec", None)
    changed = config_differences(checkpoint.get(CONFIG_KEY), spec.to_config()) \
        if spec is not None and CONFIG_KEY in checkpoint else []
    step_only = {f"memory.{name}" for name in TRAINING_STEP_FIELDS}
    carried = [difference for difference in changed if difference.split(" ")[0] in step_only]
    if carried:  # e.g. dense AdamW -> sparse gradients and RowwiseAdamW: the same weights and optimizer state keys
        logger.info("--resume %s with %s: how the value gradient is computed, not the model; the weights and the "
                    "optimizer's moments carry over", path, "; ".join(carried))
        changed = [difference for difference in changed if difference not in carried]
    if changed and not accept_changes:
        raise UserError(f"--resume {path} was trained with another model configuration ({'; '.join(changed)}): "
                        "resume it with its own --memory and text flags, or pass --resume-with-changes to continue "
                        "its weights in this model")
    if changed:
        logger.warning("--resume-with-changes: continuing %s in another model configuration (%s)", path,
                       "; ".join(changed))
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise UserError(f"--resume {path} does not fit --model {model_name} with this run's --memory and text "
                        f"settings ({str(error).splitlines()[0]})") from error
    saved_groups, groups = _groups(checkpoint["optimizer"]["param_groups"]), _groups(optimizer.param_groups)
    if saved_groups != groups:
        raise UserError(f"--resume {path}: its optimizer trains other parameters ({', '.join(saved_groups)}) than "
                        f"this run's ({', '.join(groups)}): --trainable, --lock-* or the task changed. Resume with its "
                        f"flags, or start a new run (another --name) from its weights with --pretrained {path}")
    load_full_optimizer_state_dict(optimizer, checkpoint["optimizer"], model)
    if scaler is not None and "scaler" in checkpoint:
        scaler.load_state_dict(checkpoint["scaler"])
    if "rng" in checkpoint:
        restore_rng(checkpoint["rng"])
    state = TrainState(checkpoint["epoch"], checkpoint.get("batch_in_epoch", 0), checkpoint.get("step", 0),
                       checkpoint.get("stream_position", {}), checkpoint.get("samples_seen", 0))
    logger.info("resumed from %s: epoch %d, batch %d, step %d", path, state.epoch, state.batch_in_epoch, state.step)
    return Resumed(path, state, checkpoint.get("scheduler"))


class UnreadableCheckpoint(UserError):
    """A checkpoint that cannot be read, that ``torch.load``'s safe mode refuses, or that is no training checkpoint;
    the message names the file."""


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """A training checkpoint, read with ``weights_only=True``.

    Raises:
        UnreadableCheckpoint: the file is damaged, refused by the safe mode, or lacks the training keys.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # damaged files fail in many ways inside torch.load
        reason = next(iter(str(error).strip().splitlines()), "")
        raise UnreadableCheckpoint(f"{path} is not a readable checkpoint ({type(error).__name__}: {reason})") from error
    missing = sorted({"epoch", "state_dict", "optimizer"} - set(checkpoint)) if isinstance(checkpoint, dict) else []
    if not isinstance(checkpoint, dict) or missing:
        raise UnreadableCheckpoint(f"{path} is not a training checkpoint (it lacks {missing or 'a dict'})")
    return checkpoint


def set_aside(path: Path, suffix: str) -> Path:
    """Rename ``path`` to ``path`` + ``suffix`` (numbered if that exists), so that nothing overwrites it."""
    target, number = path.with_name(path.name + suffix), 1
    while target.exists():
        target, number = path.with_name(f"{path.name}{suffix}.{number}"), number + 1
    path.rename(target)
    return target


def find_resume_checkpoint(folder: Path) -> Optional[Tuple[Path, Dict[str, Any]]]:
    """The newest readable checkpoint in ``folder`` and its content: ``epoch_latest.pt``, else the newer of
    ``epoch_latest.prev.pt`` and the highest readable ``epoch_N.pt``. None when the folder holds no checkpoint.

    A damaged file is never overwritten later: when an older checkpoint is used, it is set aside as ``*.corrupt``.

    Raises:
        UnreadableCheckpoint: checkpoints exist but none can be read (they are left in place).
    """
    unreadable: List[Tuple[Path, UnreadableCheckpoint]] = []

    def read(path: Path) -> Optional[Tuple[Path, Dict[str, Any]]]:
        try:
            return path, load_checkpoint(path)
        except UnreadableCheckpoint as error:
            logger.warning("%s", error)
            unreadable.append((path, error))
            return None

    found = read(folder / LATEST) if (folder / LATEST).is_file() else None
    if found is None:
        options = [read(folder / PREVIOUS)] if (folder / PREVIOUS).is_file() else []
        numbered = sorted((int(m.group(1)), p) for p in folder.glob("epoch_*.pt") if (m := _EPOCH_FILE.search(p.name)))
        options.append(next((c for c in (read(p) for _, p in reversed(numbered)) if c is not None), None))
        options = [o for o in options if o is not None]
        found = max(options, key=lambda option: option[1].get("step", 0)) if options else None
    if found is None and unreadable:
        raise UnreadableCheckpoint(f"--resume latest: no checkpoint in {folder} can be read ("
                                   + "; ".join(str(error) for _, error in unreadable)
                                   + "). Move them away to start over, or pass --resume PATH")
    for path, _ in unreadable:
        logger.warning("set %s aside as %s (resuming from %s)", path, set_aside(path, ".corrupt").name, found[0])
    return found


class CheckpointLedger:
    """The checkpoints of a run and the step each was saved at, so that a non-finite loss never leaves a bad one to
    resume from.

    A checkpoint saved after step ``s`` holds weights whose loss is first computed at step ``s + 1``: it is only known
    to be good once a later loss is finite. So ``epoch_latest.pt`` is not replaced outright: the one it replaces is kept
    as ``epoch_latest.prev.pt``. When the loss of step ``k`` is non-finite, every checkpoint of step ``k - 1`` or later
    is set aside as ``*.nonfinite`` and ``epoch_latest.prev.pt`` becomes ``epoch_latest.pt`` again. Every rank keeps
    the ledger; only ``writes_files`` (rank 0) touches the files.
    """

    def __init__(self, folder: Path, writes_files: bool, resumed_from: Optional[Tuple[Path, int]] = None) -> None:
        self.folder = folder
        self.writes_files = writes_files
        self.steps: Dict[Path, int] = dict([resumed_from]) if resumed_from is not None else {}
        self.last_saved: Optional[Path] = resumed_from[0] if resumed_from is not None else None

    def before_save(self, path: Path) -> None:
        """Keep the checkpoint that saving ``path`` would replace, when it is ``epoch_latest.pt``."""
        previous = self.folder / PREVIOUS
        if path.name != LATEST:
            return
        if self.writes_files and path.exists():
            os.replace(path, previous)
        self.steps.pop(previous, None)
        if path in self.steps:
            self.steps[previous] = self.steps.pop(path)

    def saved(self, path: Path, step: int) -> None:
        self.steps[path] = step
        self.last_saved = path

    def save_failed(self, path: Path) -> None:
        """Writing ``path`` failed (disk full, Ctrl-C): when it was ``epoch_latest.pt``, the checkpoint it was to
        replace becomes ``epoch_latest.pt`` again."""
        previous = self.folder / PREVIOUS
        if path.name != LATEST or previous not in self.steps:
            return
        if self.writes_files and previous.exists() and not path.exists():
            os.replace(previous, path)
        self.steps[path] = self.steps.pop(previous)

    def newest(self) -> Optional[Tuple[Path, int]]:
        """The checkpoint ``--resume latest`` would continue from, with its step (None: none written)."""
        present = {path: step for path, step in self.steps.items() if not self.writes_files or path.exists()}
        if not present:
            return None
        latest = self.folder / LATEST
        return (latest, present[latest]) if latest in present else max(present.items(), key=lambda item: item[1])

    def discard_from(self, step: int) -> Tuple[Optional[Tuple[Path, int]], List[Path]]:
        """Set aside every checkpoint of ``step`` or later; returns the last good one (path, step), if any, and the
        files set aside."""
        aside = []
        for path in [p for p, saved in self.steps.items() if saved >= step]:
            del self.steps[path]
            if self.writes_files and path.parent == self.folder and path.exists():  # a --resume PATH elsewhere stays
                aside.append(set_aside(path, ".nonfinite"))
        latest, previous = self.folder / LATEST, self.folder / PREVIOUS
        if latest not in self.steps and previous in self.steps:
            if self.writes_files:
                os.replace(previous, latest)
            self.steps[latest] = self.steps.pop(previous)
        good = max(self.steps.items(), key=lambda item: item[1], default=None)
        return good, aside

    def finish(self) -> None:
        """The run is complete: the kept previous checkpoint is no longer needed."""
        if self.writes_files:
            (self.folder / PREVIOUS).unlink(missing_ok=True)
