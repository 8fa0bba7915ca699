"""Worker for the 2-process gloo test of sparse value gradients (a module of its own so spawned processes can import
it), and the single-process step it is compared with. Both run the trainer's own optimizer step (Trainer.step:
accumulation, the sparse average, clipping, RowwiseAdamW) on a model wrapped as the trainer wraps it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List

import torch
import torch.distributed as dist

import memclip
from memclip_train.checkpoints import TrainState
from memclip_train.data.loaders import RunData
from memclip_train.distributed import DistributedEnv
from memclip_train.main import create_optimizer, wrap_for_training
from memclip_train.params import parse_args
from memclip_train.run_logger import RunLogger
from memclip_train.tasks.contrastive import ContrastiveTask
from memclip_train.trainer import Trainer

ACCUM = 2
ARGS = ["--train-data", "a.tar", "--model", "Test-Micro-mem", "--memory", "sparse_value_grad=true", "--precision",
        "fp32", "--accum-freq", str(ACCUM), "--warmup", "0", "--grad-clip-norm", "0.05", "--value-lr", "0.02",
        "--wd", "0.1"]
VALUES = "visual.transformer.resblocks.1.mlp.values.weight"


def build(env: DistributedEnv) -> ContrastiveTask:
    torch.manual_seed(0)
    model = memclip.create_model("Test-Micro-mem", memory={"sparse_value_grad": True})
    return ContrastiveTask(model, None, None, None, env, gather_with_grad=True)


def micro_batches(batch: Dict[str, torch.Tensor], parts: int) -> List[Dict[str, torch.Tensor]]:
    size = batch["image"].shape[0] // parts
    return [{k: v[i * size:(i + 1) * size] for k, v in batch.items()} for i in range(parts)]


def train_step(task: ContrastiveTask, env: DistributedEnv, batch: Dict[str, torch.Tensor],
               run_dir: Path) -> Dict[str, object]:
    """One Trainer.step over ``batch`` in --accum-freq micro-batches. Returns the optimizer's kind, the gradients
    it stepped with (averaged and clipped; sparse ones dense, with their rows, and whether the sparse gradient
    held one row per slot read: accumulation coalesces it) and the weights after the step."""
    config = parse_args(ARGS + ["--batch-size", str(batch["image"].shape[0] // ACCUM)])
    optimizer = create_optimizer(config, task.model)
    model = wrap_for_training(config, env, task.model)
    trainer = Trainer(config, env, task, model, optimizer, None, RunData(None, None, ACCUM, 8 * ACCUM), None,
                      run_dir, RunLogger(run_dir, config, is_master=False), TrainState())
    trainer.step(micro_batches(batch, ACCUM))
    named = dict(task.model.named_parameters())
    grads = {n: p.grad.to_dense().clone() for n, p in named.items() if p.grad is not None}
    sparse = named[VALUES].grad  # clipping scales it in place, which drops the coalesced flag, not the rows
    rows = sparse.coalesce().indices()[0].clone()
    return {"optimizer": type(optimizer).__name__, "grads": grads, "rows": rows,
            "one_row_per_slot": sparse._nnz() == len(rows), "weights": {n: p.detach().clone() for n, p in named.items()},
            "ignored": list(getattr(task.model, "_ddp_params_and_buffers_to_ignore", []))}


def worker(rank: int, world: int, init_file: str, config_folder: str, batch, out: str) -> None:
    memclip.add_model_config(config_folder)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    env = DistributedEnv(rank, rank, world, torch.device("cpu"))
    task = build(env)
    if rank:
        with torch.no_grad():
            dict(task.model.named_parameters())[VALUES].add_(1.0)  # DDP ignores the table: the trainer broadcasts it
    result = train_step(task, env, micro_batches(batch, world)[rank], Path(out))
    torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)
