"""`python -m memclip_train.main`: train CLIP models with open_clip-style flags.

    # contrastive training from scratch (the demo's tiny teacher)
    python -m memclip_train.main --model ViT-Tiny-8 --train-data 'world/train/{000000..000001}.tar' \
        --val-data 'world/val/000000.tar' --batch-size 64 --epochs 5 --lr 1e-3 --warmup 50 --precision fp32
    # stage 1: distil the memory from the frozen teacher
    python -m memclip_train.main --distill --model ViT-B-16-mem --pretrained openai --train-data '...' ...
    # stage 2: long + short captions
    python -m memclip_train.main --long-short-alpha 0.8 --model ViT-B-16-mem --pretrained runs/distill/final ...

Multi-GPU: ``torchrun --nproc_per_node 4 -m memclip_train.main ...`` or srun (see scripts/slurm/).
"""
from __future__ import annotations

import logging
import random
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

import memclip
from memclip.atomic_io import stray_temporaries_in
from memory_layers import RowwiseAdamW
from memory_layers.sparse_grads import broadcast_sparse_grad_tables, sparse_grad_parameter_names, sparse_grad_tables

from .checkpoints import Resumed, TrainState, find_resume_checkpoint, load_checkpoint, restore_checkpoint
from .error_reporting import ProgramFailed, UserError, report_user_errors
from .data.loaders import RunData
from .training_data import build_data
from .data.sources import has_captions
from .distributed import DistributedEnv, all_reduce_max, barrier, init_distributed
from .params import PROG, TrainConfig, parse_args
from .preemption import PREEMPTED_EXIT_CODE, Preempted
from .resume_plan import check_task, describe, plan_resume, run_shape, saved_shape
from .run_lock import RunLock
from .run_logger import RunLogger, check_loggers_installed, setup_logging
from .tasks import build_task
from .trainer import NonFiniteLoss, RunStopped, Trainer, WriteFailed
from .training_zeroshot import TrainingZeroShot
from .values_parallel_setup import setup_values_parallel

logger = logging.getLogger("memclip_train")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prepare_run_dir(config: TrainConfig, env: DistributedEnv) -> Tuple[Path, bool, Optional[RunLock]]:
    """The run folder, whether this run created it, and its lock (held by the first process; None elsewhere).

    Refuses an existing folder unless resuming, and a folder that another process trains; removes the temporary
    files that killed writes left in it (every process learns whether the first one could take the folder).

    Raises:
        FileExistsError: the folder exists and the run does not resume.
        RunLocked: another process trains the folder (or did, from another host).
    """
    run_dir = Path(config.logging.logs) / config.run_name
    created, lock, refused = False, None, None
    if env.is_master:
        try:
            created = _create_folder(run_dir, bool(config.logging.resume))
            lock = RunLock(run_dir)
            lock.acquire()
            (run_dir / "checkpoints").mkdir(exist_ok=True)
            remove_leftover_temporaries(run_dir)
        except Exception as error:  # re-raised below, once every process knows
            refused = error
            if lock is not None:
                lock.release()
            if created:
                shutil.rmtree(run_dir, ignore_errors=True)
    if all_reduce_max(torch.tensor(int(refused is not None), device=env.device), env).item():
        raise refused if refused is not None else UserError(f"the first process could not take the run folder "
                                                            f"{run_dir} (see its error)")
    barrier(env)
    return run_dir, created, lock


def _create_folder(run_dir: Path, resume: bool) -> bool:
    """Create ``run_dir`` (atomically: of two runs started at once, one creates it); whether this call did."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        run_dir.mkdir()
        return True
    except FileExistsError:
        if not resume:
            raise FileExistsError(f"run folder {run_dir} exists: pass --resume latest to continue it, or another "
                                  "--name") from None
        return False


def remove_leftover_temporaries(run_dir: Path) -> None:
    """Delete the hidden ``.<name>.<random>.tmp`` files that writes killed mid-way (``kill -9``, power loss) left in
    the run folder, its checkpoints and its final model (the run's lock is held: nobody else writes there)."""
    leftovers = [path for folder in (run_dir, run_dir / "checkpoints", run_dir / "final")
                 for path in stray_temporaries_in(folder)]
    if not leftovers:
        return
    size = sum(path.stat().st_size for path in leftovers)
    for path in leftovers:
        path.unlink(missing_ok=True)
    names = ", ".join(str(path.relative_to(run_dir)) for path in leftovers)
    logger.info("removed %d temporary file%s (%.1f MB) left by interrupted writes: %s", len(leftovers),
                "s" if len(leftovers) > 1 else "", size / 1e6, names)


def holds_checkpoints(run_dir: Path) -> bool:
    folder = run_dir / "checkpoints"
    return (folder.is_dir() and any(folder.iterdir())) or (run_dir / "final").exists()


def resume_point(config: TrainConfig, run_dir: Path) -> Optional[Tuple[Path, Dict[str, Any]]]:
    """The checkpoint to resume from and its content (None: start from the beginning)."""
    resume = config.logging.resume
    if not resume:
        return None
    if resume == "latest":
        found = find_resume_checkpoint(run_dir / "checkpoints")
        if found is None:
            logger.warning("--resume latest: no checkpoint in %s yet; starting from the beginning", run_dir)
        return found
    if not Path(resume).is_file():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint")
    return Path(resume), load_checkpoint(Path(resume))


def create_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW over :func:`memclip.param_groups` (the values at their own lr, without weight decay unless the memory
    config gives one), or ``--opt timm/NAME``. When a value table has sparse gradients (``--memory
    sparse_value_grad=true``) it is :class:`memory_layers.RowwiseAdamW`, which steps the rows read only."""
    sparse = sparse_grad_tables(model)
    groups = memclip.param_groups(model, lr=config.optim.lr, weight_decay=config.optim.wd,
                                  value_lr=config.model.value_lr)
    for group in groups:
        logger.info("optimizer group %-8s lr %-8g wd %-6g fixed_lr %-5s %.3fM params", group["name"], group["lr"],
                    group["weight_decay"], group["fixed_lr"], sum(p.numel() for p in group["params"]) / 1e6)
    o = config.optim
    if sparse and o.opt != "adamw":
        raise UserError(f"--opt {o.opt} cannot step the sparse value gradients of --memory sparse_value_grad=true: "
                        "use --opt adamw (memory_layers.RowwiseAdamW)")
    if o.opt.startswith("timm/"):
        from timm.optim import create_optimizer_v2

        extra = {"momentum": o.momentum} if o.momentum is not None else {}
        return create_optimizer_v2(groups, o.opt[len("timm/"):], lr=o.lr, weight_decay=o.wd, eps=o.eps,
                                   betas=(o.beta1, o.beta2), **extra)
    if sparse:
        logger.info("%d value table(s) with sparse gradients: RowwiseAdamW steps only the rows each step reads",
                    len(sparse))
    adamw = RowwiseAdamW if sparse else torch.optim.AdamW
    return adamw(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)


def create_scaler(config: TrainConfig, env: DistributedEnv):
    if config.model.precision != "amp":
        return None
    if env.device.type != "cuda":
        raise UserError("--precision amp (fp16) needs CUDA; use amp_bf16 or fp32 on the CPU")
    return torch.amp.GradScaler("cuda")


def wrap_for_training(config: TrainConfig, env: DistributedEnv, model: torch.nn.Module) -> torch.nn.Module:
    """DDP (``--use-bn-sync``, ``--ddp-static-graph``) and ``--torchcompile`` around the task's model, in open_clip's
    order; checkpoints keep saving the unwrapped model."""
    if env.distributed:
        if config.distributed.use_bn_sync:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        leave_sparse_values_to_the_trainer(model)
        model = DistributedDataParallel(model, device_ids=[env.device.index] if env.device.type == "cuda" else None,
                                        static_graph=config.distributed.ddp_static_graph)
    if config.model.torchcompile:
        logger.info("compiling the model (torch.compile)")
        model = torch.compile(model)
    return model


def leave_sparse_values_to_the_trainer(model: torch.nn.Module) -> None:
    """DDP's reducer fails on the sparse gradient of a value table (it takes sparse gradients from nn.Embedding
    only): DDP ignores those tables, which start from rank 0's weights (collective), and the trainer averages their
    gradients (:func:`memory_layers.sparse_grads.sync_sparse_value_grads`)."""
    names = sparse_grad_parameter_names(model)
    if not names:
        return
    ignored = list(getattr(model, "_ddp_params_and_buffers_to_ignore", [])) + names
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignored)
    broadcast_sparse_grad_tables(model)


@dataclass
class RunProgress:
    """How far a run got: once training has begun, a failure never removes its folder (its log, its checkpoints)."""

    training_began: bool = False


def run(config: TrainConfig, command: Optional[str] = None) -> Path:
    """Train as ``config`` says; returns the run folder. Also the entry point for tests and the demo.

    ``command``: the command line that asked for the run, recorded in params.txt (and so in the model card).

    A run that fails before training begins removes the folder it created (its log went to the console too), so the
    corrected command can run under the same --name. Once training has begun, the folder and everything in it stay.
    """
    check_loggers_installed(config.logging.report_to)
    d = config.distributed
    env = init_distributed(config.device, d.dist_url, d.dist_backend, set_device_rank=not d.no_set_device_rank)
    run_dir, created, lock = prepare_run_dir(config, env)
    local = config.logging.log_local
    log_file = setup_logging(run_dir / (f"out-{env.rank}.log" if local else "out.log"),
                             env.local_rank == 0 if local else env.is_master, debug=config.logging.debug)
    progress = RunProgress()
    finished = False
    try:
        _train(config, env, run_dir, progress, command)
        finished = True
        return run_dir
    finally:
        if log_file is not None:
            logging.getLogger().removeHandler(log_file)
            log_file.close()
        if not finished and created and env.is_master and not progress.training_began \
                and not holds_checkpoints(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
            logger.info("removed %s: the run stopped before training began", run_dir)
        if lock is not None:
            lock.release()


def _train(config: TrainConfig, env: DistributedEnv, run_dir: Path, progress: RunProgress,
           command: Optional[str] = None) -> Path:
    logger.info("run %s on %s (%d process%s)", run_dir, env.device, env.world_size, "es" if env.distributed else "")
    seed_everything(config.seed)
    val_captions = bool(config.data.val_data) and has_captions(
        config.data.val_data, config.data.dataset_type, config.data.csv_caption_key, config.data.csv_separator)
    task = build_task(config, env, has_val_captions=val_captions)
    setup_values_parallel(task.model, env)
    logger.debug("model:\n%s", task.model)
    seed_everything(config.seed + env.rank)
    train = build_data(config.data.train_data, config.data, task.fields, task.preprocess_train, task.tokenizer,
                       config.optim.batch_size, env, config.seed, train=True,
                       num_samples=config.data.train_num_samples)
    val = None
    if config.data.val_data:
        val = build_data(config.data.val_data, config.data, task.val_fields, task.preprocess_val, task.tokenizer,
                         config.optim.batch_size, env, config.seed, train=False,
                         num_samples=config.data.val_num_samples)
        if env.is_master:  # rank 0 validates: find unusable validation data now, not after an epoch of training
            val.stream.check_usable()
    zeroshot = TrainingZeroShot.from_config(config)
    optimizer = create_optimizer(config, task.model)
    scaler = create_scaler(config, env)
    found = resume_point(config, run_dir)
    resumed = resume(config, env, found, task.model, optimizer, scaler, train) if found else None
    state = resumed.state if resumed is not None else TrainState()
    model = wrap_for_training(config, env, task.model)
    run_logger = RunLogger(run_dir, config, env.is_master, command)
    if resumed is not None:
        run_logger.drop_after(state.step, state.epoch)
    trainer = Trainer(config, env, task, model, optimizer, scaler, train, val, run_dir, run_logger, state,
                      zeroshot=zeroshot, resumed=resumed)
    progress.training_began = True
    try:
        trainer.fit()
    except NonFiniteLoss as error:  # logged here, while out.log is still open
        logger.error("%s", error)
        raise
    except Preempted as error:
        logger.warning("%s", error)
        raise
    except RunStopped as error:
        logger.error("%s", error)
        raise
    finally:
        run_logger.close()
    return run_dir


def resume(config: TrainConfig, env: DistributedEnv, found: Tuple[Path, Dict[str, Any]], model: torch.nn.Module,
           optimizer: torch.optim.Optimizer, scaler: Optional[Any], train: RunData) -> Resumed:
    """Restore a checkpoint and carry its position into this run's units, by samples seen (see
    :mod:`memclip_train.resume_plan`).

    Raises:
        UserError: another task, model configuration or parameter groups, or a position that cannot be carried over
            exactly (unless ``--resume-with-changes``); the message names what changed.
    """
    path, checkpoint = found
    now = run_shape(config, env.world_size, train)
    saved = saved_shape(checkpoint, now)
    check_task(saved, now, path)  # before the optimizer: another task's state would not load, and say nothing
    accept = config.logging.resume_with_changes
    resumed = restore_checkpoint(path, checkpoint, model, optimizer, scaler, config.model.model, accept)
    if "samples_seen" not in checkpoint:  # written before samples were counted
        resumed.state.samples_seen = resumed.state.step * saved.step_samples
    plan = plan_resume(saved, now, resumed.state, path, accept)
    (logger.info if plan.exact else logger.warning)("%s", describe(plan, now))
    resumed.state = plan.state
    return resumed


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    config = parse_args(argv)
    return report_user_errors(PROG, config.logging.debug, lambda: train_to_exit_code(config, argv))


def resume_command(argv: Sequence[str]) -> str:
    """The command that continues a run started with ``argv``."""
    args = list(argv)
    if "--resume" in args:
        args[args.index("--resume") + 1:args.index("--resume") + 2] = ["latest"]
    else:
        args += ["--resume", "latest"]
    return f"{PROG} " + " ".join(shlex.quote(arg) for arg in args)


INTERRUPTED_EXIT_CODE = 130
"""Exit code after Ctrl-C, the shell's convention for SIGINT."""


def train_to_exit_code(config: TrainConfig, argv: Optional[Sequence[str]] = None) -> int:
    """0 when the run finished, 2 when its loss became non-finite, PREEMPTED_EXIT_CODE after a signal. ``argv``, the
    trainer's arguments, is recorded in params.txt as the command that made the run.

    Raises:
        ProgramFailed: a write failed (code 2) or Ctrl-C stopped the run (code 130); its one line names the checkpoint
            that is still good and the command that resumes it.
    """
    command = shlex.join([*PROG.split(), *argv]) if argv is not None else None
    try:
        run(config, command)
    except NonFiniteLoss:
        return 2
    except Preempted:
        return PREEMPTED_EXIT_CODE
    except RunStopped as error:
        resume = (f"resume with: {resume_command(argv)}" if argv is not None else "resume with --resume latest") \
            if error.good is not None else "rerun the command to start again"
        hint = "free space or make the folder writable, then " if isinstance(error, WriteFailed) else ""
        code = 2 if isinstance(error, WriteFailed) else INTERRUPTED_EXIT_CODE
        raise ProgramFailed(f"{error}; nothing else was lost: {hint}{resume}", code) from error
    return 0


if __name__ == "__main__":
    sys.exit(main())
