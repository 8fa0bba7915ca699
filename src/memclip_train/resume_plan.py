"""Where a resumed run continues: by samples seen, not by batch index.

A checkpoint records its position in samples (``samples_seen`` over the run, and per data-loader worker the samples
delivered and consumed in the current epoch) and the run's :class:`RunShape`: the settings that say which samples
a step trains and how many steps a run has. On resume the position is carried into this run's units:

- nothing changed: the run continues exactly where it stopped;
- only ``--batch-size`` or ``--accum-freq`` changed (or, at an epoch boundary, anything but the task and the samples
  per epoch): the position is converted when every count divides evenly into the new batches and steps, and the
  run continues exactly (no sample skipped or repeated, the learning-rate schedule at the same fraction of the run);
- otherwise the resume cannot be exact and is refused, naming each change, unless ``--resume-with-changes``: then
  the samples seen are kept (the schedule continues at their fraction of the run), and the interrupted epoch trains
  its remaining samples from its start when its stream changed (some of its samples twice, some not at all).

A changed task (distillation resumed as stage 2) is always refused: its optimizer holds other parameters.
"""
from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .checkpoints import TrainState
from .error_reporting import UserError
from .data.csv_stream import CsvStream
from .data.loaders import RunData
from .data.shard_stream import BatchStream, ShardStream, StreamPosition
from .params import TrainConfig

logger = logging.getLogger(__name__)

STREAM_FLAGS = {"shards": "--train-data (its shard files)", "seed": "--seed", "shuffle_buffer": "--shuffle-buffer",
                "resampled": "--dataset-resampled", "upsampling": "--train-data-upsampling-factors"}
TASK_FLAGS = {"contrastive": "contrastive training", "distill": "--distill", "distill_text": "--distill-text",
              "long_short": "--long-short-alpha"}


def data_identity(urls: List[str]) -> str:
    """A short digest of the shard *file names* in order (not their folders: the same shards copied elsewhere are the
    same data, as the augmentation seeds say)."""
    names = "\n".join(url.replace("\\", "/").rstrip("/").split("/")[-1] for url in urls)
    return hashlib.sha1(names.encode()).hexdigest()[:16] + f":{len(urls)}"


@dataclass(frozen=True)
class RunShape:
    """The settings that give a checkpoint's position its meaning.

    Attributes:
        task: the task's kind (contrastive, distill, distill_text, long_short).
        batch_size: samples per batch on each process.
        world_size: processes.
        workers: data-loader workers per process (at least 1: 0 and 1 read the same stream).
        accum_freq: batches per optimizer step.
        samples_per_epoch: samples an epoch trains, over all processes.
        stream: what orders the samples: ``shards`` (:func:`data_identity`), ``seed``, ``shuffle_buffer``,
            ``resampled``, ``upsampling``.
    """

    task: str
    batch_size: int
    world_size: int
    workers: int
    accum_freq: int
    samples_per_epoch: int
    stream: Tuple[Tuple[str, Any], ...] = ()

    @property
    def step_samples(self) -> int:
        """Samples one optimizer step trains, over all processes."""
        return self.batch_size * self.world_size * self.accum_freq

    def to_dict(self) -> Dict[str, Any]:
        data = asdict(self)
        data["stream"] = dict(self.stream)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunShape":
        return cls(**{**data, "stream": tuple(sorted(dict(data.get("stream", {})).items()))})

    def changes(self, now: "RunShape") -> Dict[str, str]:
        """``{setting: "--flag OLD -> NEW"}`` for every setting ``now`` changes (the task excepted)."""
        said: Dict[str, str] = {}
        for name, flag in (("batch_size", "--batch-size"), ("world_size", "processes (world size)"),
                           ("workers", "--workers"), ("accum_freq", "--accum-freq"),
                           ("samples_per_epoch", "samples per epoch (the data, or --train-num-samples)")):
            old, new = getattr(self, name), getattr(now, name)
            if old != new:
                said[name] = f"{flag} {old} -> {new}"
        old_stream, new_stream = dict(self.stream), dict(now.stream)
        for name, flag in STREAM_FLAGS.items():
            if old_stream.get(name) != new_stream.get(name):
                said[name] = (f"{flag} changed" if name == "shards"
                              else f"{flag} {old_stream.get(name)} -> {new_stream.get(name)}")
        return said


def stream_identity(stream: BatchStream) -> str:
    """What the training stream reads: its shard file names (:func:`data_identity`), its table's name and rows, or
    the synthetic stream's settings."""
    if isinstance(stream, ShardStream):
        return data_identity(stream.urls)
    if isinstance(stream, CsvStream):
        return f"{data_identity([stream.path])}:{len(stream)} rows"
    return stream.settings() if isinstance(stream, BatchStream) else type(stream).__name__


def run_shape(config: TrainConfig, world_size: int, train: RunData) -> RunShape:
    """This run's shape, from its configuration, its process count and its training data."""
    data = config.data
    stream = {"shards": stream_identity(train.stream), "seed": config.seed, "shuffle_buffer": data.shuffle_buffer,
              "resampled": data.dataset_resampled, "upsampling": data.train_data_upsampling_factors}
    return RunShape(config.task.kind, config.optim.batch_size, world_size, max(1, data.workers),
                    config.optim.accum_freq, train.samples_per_epoch, tuple(sorted(stream.items())))


def saved_shape(checkpoint: Mapping[str, Any], now: RunShape) -> RunShape:
    """The shape a checkpoint records (:func:`legacy_shape` for one written before shapes were recorded)."""
    if "run_shape" in checkpoint:
        return RunShape.from_dict(checkpoint["run_shape"])
    return legacy_shape(checkpoint.get("args", {}), now)


@dataclass
class ResumePlan:
    """The resumed run's starting state in this run's units, and how it relates to the checkpoint's."""

    state: TrainState
    exact: bool
    changes: List[str]


def legacy_shape(args: Mapping[str, Any], now: RunShape) -> RunShape:
    """The shape of a checkpoint written before shapes were recorded, from its ``args`` (what it cannot tell, the
    world size, the samples per epoch and the stream, is taken as unchanged)."""
    optim, data, task = args.get("optim", {}), args.get("data", {}), args.get("task", {})
    kind = ("distill" if task.get("distill") else "distill_text" if task.get("distill_text")
            else "long_short" if task.get("long_short_alpha") is not None else "contrastive")
    return replace(now, task=kind, batch_size=optim.get("batch_size", now.batch_size),
                   workers=max(1, data.get("workers", now.workers)), accum_freq=optim.get("accum_freq", now.accum_freq))


def check_task(saved: RunShape, now: RunShape, path: Any) -> None:
    """A run continues its own task.

    Raises:
        UserError: the checkpoint is of another task; the message names both and how to start from its weights.
    """
    if saved.task != now.task:
        raise UserError(f"--resume {path} holds a {TASK_FLAGS.get(saved.task, saved.task)} run; this command is "
                        f"{TASK_FLAGS.get(now.task, now.task)}. A run continues its own task: resume it with its own "
                        f"flags, or start a new run (another --name) from its weights with --pretrained {path}")


def plan_resume(saved: RunShape, now: RunShape, state: TrainState, path: Any, accept_changes: bool) -> ResumePlan:
    """Carry ``state`` (in the checkpoint's units) into this run's (see the module docstring).

    Raises:
        UserError: the task changed, or the resume cannot be exact and ``accept_changes`` is off; the message names
            every change and the flag that accepts them.
    """
    check_task(saved, now, path)
    changes = saved.changes(now)
    if not changes:
        return ResumePlan(state, True, [])
    said = list(changes.values())
    exact = _exact(saved, now, state, changes)
    if exact is not None:
        return ResumePlan(exact, True, said)
    if not accept_changes:
        where = (f"epoch {state.epoch}, {_samples_in_epoch(saved, state)} of its {saved.samples_per_epoch} samples "
                 "trained" if state.batch_in_epoch else f"the start of epoch {state.epoch}")
        raise UserError(f"--resume {path} cannot continue exactly from {where}: {'; '.join(said)}. Resume with the "
                        "checkpoint's settings, or pass --resume-with-changes to continue by samples seen (the "
                        "interrupted epoch may then train some samples twice and others not at all)")
    return ResumePlan(_approximate(saved, now, state), False, said)


def _samples_in_epoch(shape: RunShape, state: TrainState) -> int:
    """Samples the current epoch has trained, over all processes."""
    return state.batch_in_epoch * shape.batch_size * shape.world_size


def _exact(saved: RunShape, now: RunShape, state: TrainState, changes: Mapping[str, str]) -> Optional[TrainState]:
    """The state in this run's units when the resume can be exact, else None."""
    if "samples_per_epoch" in changes or state.samples_seen % now.step_samples:
        return None
    if not state.batch_in_epoch:  # an epoch boundary: the next epoch is read afresh with this run's settings
        return replace(state, stream_position={})
    if set(changes) - {"batch_size", "accum_freq"}:
        return None  # another stream: the samples consumed so far cannot be found in it
    position = StreamPosition.from_dict(state.stream_position)
    delivered = {worker: batches * saved.batch_size for worker, batches in position.batches.items()}
    if any(samples % now.batch_size for samples in delivered.values()):
        return None
    batches = {worker: samples // now.batch_size for worker, samples in delivered.items()}
    batch_in_epoch = sum(batches.values())
    if batch_in_epoch % now.accum_freq or len(set(batches.values())) > 1:
        return None
    return replace(state, batch_in_epoch=batch_in_epoch,
                   stream_position=StreamPosition(dict(position.consumed), batches).to_dict())


def _approximate(saved: RunShape, now: RunShape, state: TrainState) -> TrainState:
    """The state for ``--resume-with-changes`` when no exact one exists: the samples seen kept, the interrupted
    epoch's remaining samples trained from its start (whole steps, an equal count of batches per worker)."""
    if not state.batch_in_epoch:
        return replace(state, stream_position={})
    done = _samples_in_epoch(saved, state) // (now.batch_size * now.world_size)
    unit = math.lcm(now.workers, now.accum_freq)
    batch_in_epoch = done // unit * unit
    if not batch_in_epoch:
        return replace(state, batch_in_epoch=0, stream_position={})
    position = {"consumed": {}, "batches": {str(w): batch_in_epoch // now.workers for w in range(now.workers)}}
    return replace(state, batch_in_epoch=batch_in_epoch, stream_position=position)


def describe(plan: ResumePlan, now: RunShape) -> str:
    """One line for the log: where the run continues, in samples."""
    state = plan.state
    position = state.samples_seen // now.step_samples
    text = (f"continuing at {state.samples_seen} samples seen (schedule step {position}); epoch {state.epoch}, "
            f"batch {state.batch_in_epoch} at --batch-size {now.batch_size}")
    if plan.changes:
        how = "exact" if plan.exact else "approximate: --resume-with-changes"
        text += f" ({how} despite: {'; '.join(plan.changes)})"
    return text
