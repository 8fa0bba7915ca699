"""`Trainer`: the epoch and step loop shared by every task (accumulation, AMP, DDP, logging, checkpoints)."""
from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from tqdm import tqdm

import memclip
from memclip.precision import autocast_for
from memclip.surgery import usage_by_block
from memory_layers import full_value_tables, sync_value_shard_grads, track_usage
from memory_layers.sparse_grads import coalesce_sparse_grads, sparse_grad_tables, sync_sparse_value_grads
from memory_layers.values_parallel import gather_full_optimizer_state_dict, sharded_clip_grad_norm_
from memclip.errors import InputError

from .checkpoints import LATEST, CheckpointLedger, Resumed, TrainState, save_checkpoint
from .data.loaders import RunData
from .data.shard_stream import StreamPosition
from .distributed import DistributedEnv, all_reduce_max, barrier
from .params import TrainConfig
from .preemption import Preempted, PreemptionFlag
from .progress import show_progress
from .resume_plan import run_shape
from .run_card import write_run_card
from .run_logger import RunFileError, RunLogger
from .schedule import LearningRateSchedule, warmup_steps
from .tasks.base import Task

if TYPE_CHECKING:  # main builds the zero-shot sets; the loop only calls them (and so loads no eval code)
    from .training_zeroshot import TrainingZeroShot

logger = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    """The loss or the weights became NaN or Inf; the message names the step, the loss terms and the last good
    checkpoint."""


class RunStopped(RuntimeError):
    """Training stopped before its end for a reason outside the run (a write that failed, Ctrl-C); nothing that was
    written is lost. ``good`` is the checkpoint ``--resume latest`` continues from, with its step (None: none yet)."""

    def __init__(self, what: str, good: Optional[Tuple[Path, int]]) -> None:
        kept = (f"the newest checkpoint, {good[0]} (step {good[1]}), is whole" if good is not None
                else "no checkpoint was written yet")
        super().__init__(f"{what}; {kept}")
        self.good = good


class WriteFailed(RunStopped):
    """A file of the run could not be written (disk full, read-only file system, permissions)."""


class Interrupted(RunStopped):
    """Ctrl-C (SIGINT) stopped the run."""


class NonFiniteWatch:
    """Remembers, on the device, the first step whose loss terms were not all finite, and those terms.

    Checking costs one host sync, so it happens at log steps, before every checkpoint and at epoch ends, never per
    step.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.first_step = torch.full((), -1, dtype=torch.long, device=device)
        self.terms: Optional[torch.Tensor] = None
        self.names: List[str] = []

    def update(self, step: int, terms: Dict[str, torch.Tensor]) -> None:
        values = torch.stack([t.detach().float().reshape(()) for t in terms.values()])
        if self.terms is None:
            self.names, self.terms = list(terms), torch.zeros_like(values)
        fresh = ~torch.isfinite(values).all() & (self.first_step < 0)
        self.first_step = torch.where(fresh, torch.tensor(step, device=self.device), self.first_step)
        self.terms = torch.where(fresh, values, self.terms)

    def first_non_finite(self, env: DistributedEnv) -> int:
        """The first step of any rank whose loss was not finite, or -1 (a collective: call it on every rank)."""
        return int(all_reduce_max(self.first_step.clone(), env))

    def describe(self) -> str:
        if self.terms is None:
            return "terms from another rank"
        return ", ".join(f"{n}={v:.4g}" for n, v in zip(self.names, self.terms.tolist()))


def stability_advice(config: TrainConfig) -> str:
    """What to change before resuming a run whose loss became non-finite, for this run's settings."""
    optim, precision = config.optim, config.model.precision
    tips = [f"a lower --lr (now {optim.lr:g})"]
    tips.append(f"a lower --grad-clip-norm (now {optim.grad_clip_norm:g})" if optim.grad_clip_norm is not None
                else "--grad-clip-norm 1.0")
    if precision == "amp":
        tips.append("--precision amp_bf16 or fp32 (fp16 overflows easily)")
    elif precision == "amp_bf16":
        tips.append("--precision fp32")
    return ", ".join(tips[:-1]) + " or " + tips[-1]


class _BatchTally:
    """Passes a loader's batches through, counting what they say about themselves: captions a stand-in replaced
    (``<role>_missing``) and samples skipped (``_skipped``, per worker)."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.missing: Counter = Counter()
        self.skipped: Dict[Any, Dict[str, int]] = {}

    def __iter__(self):
        for batch in self.loader:
            for name in [k for k in batch if k.endswith("_missing")]:
                self.missing[name[:-len("_missing")]] += int(batch.pop(name))
            if "_skipped" in batch:
                self.skipped[batch.get("_worker")] = batch["_skipped"]
            yield batch

    def metrics(self, prefix: str) -> Dict[str, int]:
        skipped: Counter = Counter()
        for counts in self.skipped.values():
            skipped.update(counts)
        values = {f"{prefix}captions_missing_{role}": count for role, count in sorted(self.missing.items())}
        values.update({f"{prefix}skipped_{reason.replace(' ', '_')}": count
                       for reason, count in sorted(skipped.items())})
        return values


class Trainer:
    """Runs a task for the configured epochs from ``state`` (a fresh or resumed run).

    Args:
        config: the run's configuration.
        env: this process's place in the process group.
        task: the objective and its models.
        model: ``task.model``, wrapped in DistributedDataParallel when distributed.
        optimizer, scaler: AdamW (RowwiseAdamW for sparse value gradients) and the fp16 GradScaler (None unless
            --precision amp on CUDA).
        train, val: the loaders.
        run_dir: the run folder.
        run_logger: metrics.jsonl and friends.
        state: where the run starts.
        zeroshot: zero-shot sets and their frequency (--imagenet-val/--imagenet-v2/--zeroshot-synth), or None.
        resumed: what :func:`~memclip_train.checkpoints.restore_checkpoint` put back (None: a fresh run): the
            checkpoint ``state`` comes from, the last known good one, and the schedule's state.
    """

    def __init__(self, config: TrainConfig, env: DistributedEnv, task: Task, model: nn.Module,
                 optimizer: torch.optim.Optimizer, scaler: Optional[Any], train: RunData, val: Optional[RunData],
                 run_dir: Path, run_logger: RunLogger, state: TrainState,
                 zeroshot: Optional[TrainingZeroShot] = None, resumed: Optional[Resumed] = None) -> None:
        self.config = config
        self.env = env
        self.task = task
        self.model = model
        self.optimizer = optimizer
        self.scaler = scaler
        self.train = train
        self.val = val
        self.run_dir = run_dir
        self.checkpoint_dir = run_dir / "checkpoints"
        self.run_logger = run_logger
        self.state = state
        self.zeroshot = zeroshot
        self.accum = config.optim.accum_freq
        self.steps_per_epoch = train.batches_per_epoch // self.accum
        self.shape = run_shape(config, env.world_size, train)
        self.step_samples = self.shape.step_samples
        if self.steps_per_epoch < 1:
            raise InputError(f"an epoch has {train.batches_per_epoch} batches, fewer than --accum-freq {self.accum}")
        o = config.optim
        kind = "none" if o.skip_scheduler else o.lr_scheduler
        warmup = warmup_steps(o.warmup, o.warmup_fraction, self.steps_per_epoch * o.epochs, kind)
        self.schedule = LearningRateSchedule(optimizer, warmup, self.steps_per_epoch * o.epochs, kind,
                                             self.steps_per_epoch * (o.epochs_cooldown or 0), o.lr_cooldown_power,
                                             o.lr_cooldown_end)
        if resumed is not None and resumed.scheduler_state is not None:
            self.schedule.load_state_dict(resumed.scheduler_state)
        self.autocast: Callable = autocast_for(config.model.precision, env.device)
        self.watch = NonFiniteWatch(env.device)
        self.preemption = PreemptionFlag()
        self.stop = False
        self.checkpoints = CheckpointLedger(self.checkpoint_dir, env.is_master,
                                            (resumed.path, state.step) if resumed is not None else None)
        self.params = [p for p in task.model.parameters() if p.requires_grad]
        self.sparse_params = [table.weight for table in sparse_grad_tables(task.model)]
        # The loader deals batches round-robin starting at worker 0, so a mid-epoch save waits for a batch count
        # that is a multiple of the worker count: a resumed run then continues in exactly the same order.
        self.loader_workers = max(1, config.data.workers)
        self._reset_interval()

    # ------------------------------------------------------------------ the loop
    def fit(self) -> None:
        """Train to the last epoch and save the final model; SIGUSR1/SIGTERM are handled while it runs (the run
        saves and raises :class:`Preempted` at the next safe step).

        Raises:
            WriteFailed: a checkpoint, the log of metrics or the final model could not be written (disk full, a
                read-only file system); the message names the file and the checkpoint that is still good.
            Interrupted: Ctrl-C; the message names the checkpoint to resume from.
        """
        try:
            with self.preemption:
                self._fit()
        except RunFileError as error:
            raise WriteFailed(f"could not write {error.filename} ({error.strerror})", self.checkpoints.newest()) \
                from error
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted (Ctrl-C) at step {self.state.step}", self.checkpoints.newest()) from None

    def _fit(self) -> None:
        epochs = self.config.optim.epochs
        logger.info("training %d epochs x %d steps (%d samples/epoch, global batch %d x accum %d)", epochs,
                    self.steps_per_epoch, self.train.samples_per_epoch,
                    self.config.optim.batch_size * self.env.world_size, self.accum)
        for epoch in range(self.state.epoch, epochs):
            self.train_epoch(epoch)
            completed = epoch + 1
            self.state = TrainState(epoch=completed, batch_in_epoch=0, step=self.state.step,
                                    samples_seen=self.state.samples_seen)
            self.check_finite()
            self.save_epoch(completed)  # before evaluating: a failure there keeps the epoch's training
            frequency = self.config.logging.val_frequency
            measured: Dict[str, Any] = {}
            if self.val is not None and frequency and (completed % frequency == 0 or completed == epochs):
                measured.update(self.validate(completed) or {})
            if self.zeroshot is not None and self.zeroshot.due(completed):
                measured.update(self.zero_shot(completed) or {})
            self.run_logger.log_results(completed, measured, self.val.samples_per_epoch if self.val else None)
            if self.stop and completed < epochs:
                self._raise_preempted()
        with full_value_tables(self.task.model):
            if self.env.is_master:
                try:
                    final = memclip.save_pretrained(self.task.model, self.run_dir / "final")
                    write_run_card(self.task.model, self.run_dir, final)
                except OSError as error:
                    raise RunFileError(error.errno, error.strerror or str(error),
                                       error.filename or str(self.run_dir / "final")) from error
                logger.info("final model: %s (load with memclip.create_model('%s'))", final, final)
        self.checkpoints.finish()

    def _raise_preempted(self) -> None:
        raise Preempted(f"stopped on {self.preemption.signal_name or 'a signal'} at step {self.state.step}; "
                        f"checkpoint {self.checkpoints.last_saved}; rerun with --resume latest")

    def train_epoch(self, epoch: int) -> None:
        resume = StreamPosition.from_dict(self.state.stream_position) if self.state.batch_in_epoch else None
        self.train.stream.set_epoch(epoch, resume)
        position = resume or StreamPosition()
        batch_index = self.state.batch_in_epoch
        self.captions_missing = Counter()
        self.task.model.train()
        micro: List[Dict[str, torch.Tensor]] = []
        save_due = False
        bar = tqdm(total=self.train.batches_per_epoch, initial=batch_index, desc=f"epoch {epoch}", unit="batch",
                   disable=not (self.env.is_master and show_progress(self.config.logging.progress)),
                   dynamic_ncols=True)
        for batch in self.train.loader:
            worker = batch.pop("_worker")
            position.update(worker, batch.pop("_consumed"))
            self.skipped[worker] = batch.pop("_skipped")
            for name in [k for k in batch if k.endswith("_cut")]:
                self.captions_cut[name[:-4]] += int(batch.pop(name))
            for name in [k for k in batch if k.endswith("_missing")]:
                self.captions_missing[name[:-len("_missing")]] += int(batch.pop(name))
            micro.append({k: v.to(self.env.device, non_blocking=True) for k, v in batch.items()})
            batch_index += 1
            bar.update(1)
            if len(micro) < self.accum:
                continue
            terms = self.step(micro)
            self.interval_samples += sum(len(next(iter(m.values()))) for m in micro) * self.env.world_size
            micro = []
            self.state.step += 1
            self.state.samples_seen += self.step_samples
            self.state.batch_in_epoch = batch_index
            self.state.stream_position = position.to_dict()
            self.watch.update(self.state.step, terms)
            for name, value in terms.items():
                self.interval_terms[name] = self.interval_terms.get(name, 0) + value.detach().float()
            self.interval_steps += 1
            last = batch_index >= self.train.batches_per_epoch
            if self.state.step % self.config.logging.log_every_n_steps == 0 or last:
                bar.set_postfix_str(self.log_train(epoch))
                self.stop = self.stop or self.preemption.agreed(self.env)
            every = self.config.logging.save_every_n_steps
            save_due = save_due or self.stop or bool(every and self.state.step % every == 0)
            if save_due and not last and batch_index % self.loader_workers == 0:
                self.save_latest()
                save_due = False
                if self.stop:
                    bar.close()
                    self._raise_preempted()
        bar.close()
        self._report_missing_captions(epoch)

    def _report_missing_captions(self, epoch: int) -> None:
        """Say how many samples of the epoch lacked a caption that a stand-in replaced (counted in metrics.jsonl as
        ``captions_missing_long`` and ``captions_missing_short``, per epoch)."""
        data = self.config.data
        stand_ins = {"long": f"--long-caption-key {data.long_caption_key} (the short caption stood in)",
                     "short": f"--caption-key {data.caption_key} (the long caption's first sentence stood in)"}
        said = [f"{count} lacked {stand_ins.get(role, role)}" for role, count in sorted(self.captions_missing.items())
                if count]
        if said:
            logger.warning("epoch %d: of its samples on this process, %s", epoch, "; ".join(said))

    # ------------------------------------------------------------------ one optimizer step
    def step(self, micro: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        # The schedule's position is the samples seen in steps of this run's size: the step count itself when the
        # batch never changed, and the same fraction of the run after a resume with another --batch-size.
        self.schedule(self.state.samples_seen // self.step_samples)
        self.optimizer.zero_grad(set_to_none=True)
        if self.task.couples_batch and len(micro) > 1:
            terms = self._accumulate_features(micro)
        else:
            terms = self._accumulate_gradients(micro)
        sync_value_shard_grads(self.task.model)  # sharded value tables: the DDP average (no-op without them)
        if self.sparse_params:  # sparse value gradients, which DDP ignores: their average
            sync_sparse_value_grads(self.task.model)
        if self.config.optim.grad_clip_norm is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            sharded_clip_grad_norm_(self.params, self.config.optim.grad_clip_norm, self.task.model)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.task.after_step()
        return terms

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        # Sparse gradients add up by concatenating rows (every sharing layer's, every micro-batch's): one per slot.
        coalesce_sparse_grads(self.sparse_params)

    def _sync_context(self, index: int, count: int):
        """Skip DDP's gradient all-reduce on all but the last micro-batch."""
        if index < count - 1 and hasattr(self.model, "no_sync"):
            return self.model.no_sync()
        return contextlib.nullcontext()

    def _accumulate_gradients(self, micro: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """Average micro-batch losses (exact for losses that are means over samples)."""
        totals: Dict[str, torch.Tensor] = {}
        for index, batch in enumerate(micro):
            with self._sync_context(index, len(micro)):
                with self.autocast():
                    loss, terms = self.task.loss(self.task.forward(self.model, batch), batch)
                self._backward(loss / len(micro))
            for name, value in terms.items():
                totals[name] = totals.get(name, 0) + value.detach() / len(micro)
        return totals

    def _accumulate_features(self, micro: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """open_clip's --accum-freq for contrastive losses: the loss is computed over the features of all
        micro-batches (cached without gradients), re-running one micro-batch with gradients at a time. The logit
        scale is live in the first pass only, so its gradient is counted once; the later passes add it times zero,
        so that it still takes part in the last backward, where DDP averages the gradients (a parameter missing
        from that backward would leave its whole bucket un-averaged)."""
        with torch.no_grad(), self.autocast():
            cached = [self.task.forward(self.model, batch) for batch in micro]
        terms: Dict[str, torch.Tensor] = {}
        for index, batch in enumerate(micro):
            with self._sync_context(index, len(micro)):
                with self.autocast():
                    live = self.task.forward(self.model, batch)
                    merged = {}
                    for key, value in live.items():
                        if value.dim() == 0:
                            merged[key] = value if index == 0 else cached[0][key] + 0 * value
                        else:
                            merged[key] = torch.cat([live[key] if i == index else cached[i][key]
                                                     for i in range(len(micro))])
                    loss, terms = self.task.loss(merged, batch)
                self._backward(loss)
        return {name: value.detach() for name, value in terms.items()}

    # ------------------------------------------------------------------ logging, validation, checkpoints
    def _reset_interval(self) -> None:
        self.interval_terms: Dict[str, torch.Tensor] = {}
        self.interval_steps = 0
        self.interval_samples = 0
        self.interval_start = time.time()
        if not hasattr(self, "skipped"):
            self.skipped: Dict[Any, Dict[str, int]] = {}
            self.captions_cut: Counter = Counter()
            self.captions_missing: Counter = Counter()  # per epoch

    def log_train(self, epoch: int) -> str:
        self.check_finite()
        elapsed = max(time.time() - self.interval_start, 1e-9)
        values: Dict[str, Any] = {f"loss_{k}" if k != "total" else "loss": (v / self.interval_steps).item()
                                  for k, v in self.interval_terms.items()}
        values["samples_per_second"] = self.interval_samples / elapsed
        values["lr"] = next((g["lr"] for g in self.optimizer.param_groups if not g.get("fixed_lr")),
                            self.optimizer.param_groups[0]["lr"])
        scale = getattr(self.task.model, "logit_scale", None)
        if scale is not None:
            values["logit_scale"] = scale.exp().item()
        skipped = Counter()
        for counts in self.skipped.values():
            skipped.update(counts)
        values.update({f"skipped_{k.replace(' ', '_')}": v for k, v in skipped.items()})
        values.update({f"captions_cut_{k}": v for k, v in self.captions_cut.items()})
        values.update({f"captions_missing_{k}": v for k, v in self.captions_missing.items()})
        self.run_logger.log("train", self.state.step, epoch, values)
        logger.info("epoch %d step %d/%d | %s", epoch, self.state.step, self.steps_per_epoch * (epoch + 1),
                    " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items()))
        self._reset_interval()
        return f"loss {values['loss']:.4f}, {values['samples_per_second']:.1f} samples/s"

    def validate(self, epoch: int) -> Optional[Dict[str, float]]:
        metrics = None
        with full_value_tables(self.task.model):  # rank 0 validates alone: it needs the whole tables
            if self.env.is_master:
                metrics = self._validate_here(epoch)
        barrier(self.env)
        return metrics

    def _validate_here(self, epoch: int) -> Dict[str, float]:
        start = time.time()
        tally = _BatchTally(self.val.loader)
        with track_usage(self.task.model) as usage:
            metrics = self.task.validate(tally, self.autocast)
        metrics.update(tally.metrics("val_"))
        for index, summary in usage_by_block(self.task.model, usage).items():
            metrics[f"memory{index}_fraction_read"] = summary.fraction_read
            metrics[f"memory{index}_kl_from_uniform"] = summary.kl_from_uniform
        metrics["seconds"] = time.time() - start
        self.run_logger.log("val", self.state.step, epoch, metrics)
        logger.info("validation after epoch %d: %s", epoch,
                    " ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
        self.task.model.train()
        return metrics

    def zero_shot(self, epoch: int) -> Optional[Dict[str, float]]:
        """Zero-shot top-1/top-5 on the --imagenet-val/--imagenet-v2/--zeroshot-synth sets, on rank 0, logged as kind
        'zeroshot'."""
        metrics = None
        with full_value_tables(self.task.model):
            if self.env.is_master:
                start = time.time()
                metrics = self.zeroshot.evaluate(self.task.model, self.task.preprocess_val, self.task.tokenizer,
                                                 self.env.device, self.autocast, self.config.optim.batch_size,
                                                 self.config.data.workers, show_progress(self.config.logging.progress))
                metrics["seconds"] = time.time() - start
                self.run_logger.log("zeroshot", self.state.step, epoch, metrics)
                logger.info("zero-shot after epoch %d: %s", epoch,
                            " ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        barrier(self.env)
        return metrics

    def check_finite(self) -> None:
        """Stop (NonFiniteLoss) when a loss so far was not finite, leaving only good checkpoints to resume from."""
        step = self.watch.first_non_finite(self.env)
        if step >= 0:
            # The loss of step k is the first computed on the weights saved after step k - 1.
            self._stop_non_finite(step - 1, f"the loss became non-finite at step {step} ({self.watch.describe()})")

    def _weights_finite(self) -> bool:
        bad = torch.zeros((), dtype=torch.long, device=self.env.device)
        for parameter in self.task.model.parameters():
            bad = torch.maximum(bad, (~torch.isfinite(parameter.detach())).any().long())
        return not all_reduce_max(bad, self.env).item()

    def _stop_non_finite(self, bad_from: int, what: str) -> None:
        good, aside = self.checkpoints.discard_from(bad_from)
        kept = (f"the last good checkpoint, with finite weights and a finite loss, is {good[0]} (step {good[1]})"
                if good is not None else "no checkpoint with finite weights and a finite loss was written")
        moved = (f"; set aside {', '.join(p.name for p in aside)} (weights that gave the non-finite values)"
                 if aside else "")
        barrier(self.env)
        raise NonFiniteLoss(f"{what}. Stopping: {kept}{moved}. "
                            f"{'Resume from it' if good is not None else 'Start again'} with "
                            f"{stability_advice(self.config)}.")

    def _save(self, path: Path) -> None:
        self.check_finite()
        if not self._weights_finite():
            self._stop_non_finite(self.state.step, f"the weights became non-finite at step {self.state.step}")
        optimizer_state = gather_full_optimizer_state_dict(self.optimizer, self.task.model)
        self.checkpoints.before_save(path)
        try:
            with full_value_tables(self.task.model):  # checkpoints hold the full tables (collective when sharded)
                if self.env.is_master:
                    save_checkpoint(path, self.task.model, optimizer_state, self.schedule.state_dict(), self.scaler,
                                    self.state, self.run_dir.name, self.config.to_dict(), self.shape.to_dict())
        except OSError as error:  # the temporary file is gone; put back what before_save moved aside
            self.checkpoints.save_failed(path)
            raise RunFileError(error.errno, error.strerror or str(error), str(path)) from error
        except KeyboardInterrupt:
            self.checkpoints.save_failed(path)
            raise
        self.checkpoints.saved(path, self.state.step)
        barrier(self.env)

    def save_latest(self) -> None:
        self._save(self.checkpoint_dir / LATEST)

    def save_epoch(self, completed: int) -> None:
        frequency = self.config.logging.save_frequency
        if frequency and (completed % frequency == 0 or completed == self.config.optim.epochs):
            self._save(self.checkpoint_dir / f"epoch_{completed}.pt")
        self._save(self.checkpoint_dir / LATEST)
        previous = self.checkpoint_dir / f"epoch_{completed - 1}.pt"
        if self.config.logging.delete_previous_checkpoint and self.env.is_master and previous.exists():
            previous.unlink()

