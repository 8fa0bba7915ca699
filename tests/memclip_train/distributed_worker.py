"""Worker for the 2-process gloo test (a module of its own so spawned processes can import it)."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import memclip
from memclip_train.distributed import DistributedEnv
from memclip_train.tasks.contrastive import ContrastiveTask
from memclip_train.tasks.distill import DistillTask


def build(kind: str, env: DistributedEnv, teacher_state=None):
    torch.manual_seed(0)
    if kind == "contrastive":
        model = memclip.create_model("Test-Micro")
        return ContrastiveTask(model, None, None, None, env, gather_with_grad=True)
    student = memclip.create_model("Test-Micro-mem")
    teacher = memclip.create_model("Test-Micro")
    teacher.load_state_dict(teacher_state)
    memclip.freeze_except_memory(student)
    return DistillTask(student, teacher, None, None, None, env)


def one_step(task, model, batch):
    """Loss and the gradient of every trainable parameter after one forward/backward."""
    loss, _ = task.loss(task.forward(model, batch), batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in task.model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def worker(rank: int, world: int, init_file: str, config_folder: str, kind: str, batch, teacher_state, out: str):
    memclip.add_model_config(config_folder)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    env = DistributedEnv(rank, rank, world, torch.device("cpu"))
    task = build(kind, env, teacher_state)
    model = DistributedDataParallel(task.model)
    size = batch["image"].shape[0] // world
    local = {k: v[rank * size:(rank + 1) * size] for k, v in batch.items()}
    loss, grads = one_step(task, model, local)
    losses = [torch.zeros_like(loss) for _ in range(world)]
    dist.all_gather(losses, loss)
    if rank == 0:
        torch.save({"losses": losses, "grads": grads}, out)
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)
