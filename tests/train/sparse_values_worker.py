"""Worker for the 2-process gloo test of sparse value gradients (a module of its own so spawned processes can import
it), and the single-process step it is compared with."""
from __future__ import annotations

import os
from typing import Dict

import torch
import torch.distributed as dist

import memclip
from memclip_train.distributed import DistributedEnv
from memclip_train.main import create_optimizer, wrap_for_training
from memclip_train.params import parse_args
from memclip_train.tasks.contrastive import ContrastiveTask
from memory_layers.sparse_grads import coalesce_sparse_grads, sync_sparse_value_grads
from memory_layers.values_parallel import sharded_clip_grad_norm_

ARGS = ["--train-data", "a.tar", "--model", "Test-Micro-mem", "--memory", "sparse_value_grad=true",
        "--grad-clip-norm", "0.05", "--value-lr", "0.02", "--wd", "0.1"]
VALUES = "visual.transformer.resblocks.1.mlp.values.weight"


def build(env: DistributedEnv) -> ContrastiveTask:
    torch.manual_seed(0)
    model = memclip.create_model("Test-Micro-mem", memory={"sparse_value_grad": True})
    return ContrastiveTask(model, None, None, None, env, gather_with_grad=True)


def train_step(task: ContrastiveTask, model: torch.nn.Module, batch) -> Dict[str, object]:
    """One optimizer step in Trainer.step's order: backward (then coalesce), the sparse average, clip, RowwiseAdamW.
    Returns the averaged gradients (sparse ones dense, with their rows) and the weights after the step."""
    config = parse_args(ARGS)
    optimizer = create_optimizer(config, task.model)
    loss, _ = task.loss(task.forward(model, batch), batch)
    loss.backward()
    params = [p for p in task.model.parameters() if p.requires_grad]
    coalesce_sparse_grads(params)
    sync_sparse_value_grads(task.model)
    named = dict(task.model.named_parameters())
    grads = {n: p.grad.to_dense().clone() for n, p in named.items() if p.grad is not None}
    rows = named[VALUES].grad.coalesce().indices()[0].clone()
    sharded_clip_grad_norm_(params, config.optim.grad_clip_norm, task.model)
    optimizer.step()
    return {"optimizer": type(optimizer).__name__, "grads": grads, "rows": rows,
            "weights": {n: p.detach().clone() for n, p in named.items()}}


def worker(rank: int, world: int, init_file: str, config_folder: str, batch, out: str) -> None:
    memclip.add_model_config(config_folder)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    env = DistributedEnv(rank, rank, world, torch.device("cpu"))
    task = build(env)
    if rank:
        with torch.no_grad():
            dict(task.model.named_parameters())[VALUES].add_(1.0)  # DDP ignores the table: the trainer broadcasts it
    model = wrap_for_training(parse_args(ARGS), env, task.model)
    size = batch["image"].shape[0] // world
    local = {k: v[rank * size:(rank + 1) * size] for k, v in batch.items()}
    result = train_step(task, model, local)
    result["ignored"] = list(task.model._ddp_params_and_buffers_to_ignore)
    torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)
