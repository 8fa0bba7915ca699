"""Worker for the values-parallel gloo tests (a module of its own so spawned processes can import it).

Each rank runs a two-memory model whose layers share one value table, sharded over groups of ``group_size`` ranks
and wrapped in DDP, on its own tokens (a different count per rank), and the unsharded reference on every rank's
tokens with the losses averaged over ranks, as DDP does, and saves what the test compares.
"""
from __future__ import annotations

import copy
import os
from datetime import timedelta
from pathlib import Path
from typing import Dict, List

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from memory_layers import MemoryConfig, ProductKeyMemory, create_value_table, param_groups
from memory_layers import ops
from memory_layers.ops import dispatch
from memory_layers.values_parallel import (ShardedValueTable, ddp_ignored_parameter_names,
                                           gather_full_optimizer_state_dict, gather_full_state_dict,
                                           load_full_optimizer_state_dict, shard_value_tables,
                                           sharded_clip_grad_norm_, sync_value_shard_grads, value_shards)

WIDTH = 32
CONFIG = MemoryConfig(n_keys=8, heads=2, knn=4, k_dim=16, v_dim=24, value_lr=0.01)
CLIP = 0.05


class TwoMemories(nn.Module):
    """x (T, WIDTH) -> second(x + first(x)): two memories reading one shared value table."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        shared = create_value_table(CONFIG, CONFIG.v_dim)
        self.first = ProductKeyMemory(WIDTH, WIDTH, CONFIG, values=shared)
        self.second = ProductKeyMemory(WIDTH, WIDTH, CONFIG, values=shared)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(x + self.first(x))


def token_counts(world: int) -> List[int]:
    return [5 + 3 * rank for rank in range(world)]


def rank_data(world: int):
    """Every rank's tokens and targets (the same on all ranks)."""
    generator = torch.Generator().manual_seed(1)
    xs = [torch.randn(n, WIDTH, generator=generator) for n in token_counts(world)]
    targets = [torch.randn(n, WIDTH, generator=generator) for n in token_counts(world)]
    return xs, targets


def loss_of(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((out - target) ** 2).mean()


def full_grads(model: nn.Module) -> Dict[str, torch.Tensor]:
    """Every gradient under the unsharded names, with each shard's gradient gathered to the full table."""
    shards = {id(t.weight): t for t in value_shards(model)}
    grads = {}
    for name, param in model.named_parameters():
        table = shards.get(id(param))
        grads[name] = table.gather_full(param.grad) if table is not None else param.grad.clone()
    return grads


def adam_moments(state_dict) -> List[Dict[str, torch.Tensor]]:
    return [{k: v for k, v in s.items()} for _, s in sorted(state_dict["state"].items())]


def run(rank: int, world: int, group_size: int) -> Dict[str, object]:
    reference = TwoMemories(seed=0)
    model = copy.deepcopy(reference)
    count = shard_value_tables(model, group_size)
    names = ddp_ignored_parameter_names(model)
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names)
    ddp = DistributedDataParallel(model)
    xs, targets = rank_data(world)
    result: Dict[str, object] = {"count": count, "ignored": names,
                                 "shared": model.first.values is model.second.values,
                                 "is_shard": isinstance(model.first.values, ShardedValueTable),
                                 "shard_shape": tuple(model.first.values.weight.shape)}

    out = ddp(xs[rank])
    loss_of(out, targets[rank]).backward()
    sync_value_shard_grads(model)
    result["out"] = out.detach()
    result["grads"] = full_grads(model)

    reference_outs = [reference(x) for x in xs]
    torch.stack([loss_of(o, t) for o, t in zip(reference_outs, targets)]).mean().backward()
    result["reference_out"] = reference_outs[rank].detach()
    result["reference_grads"] = {n: p.grad.clone() for n, p in reference.named_parameters()}

    result["norm"] = sharded_clip_grad_norm_(model.parameters(), CLIP, model)
    result["reference_norm"] = torch.nn.utils.clip_grad_norm_(reference.parameters(), CLIP)
    result["clipped_grads"] = full_grads(model)
    result["reference_clipped_grads"] = {n: p.grad.clone() for n, p in reference.named_parameters()}

    optimizer = torch.optim.AdamW(param_groups(model, lr=1e-3, weight_decay=0.1))
    reference_optimizer = torch.optim.AdamW(param_groups(reference, lr=1e-3, weight_decay=0.1))
    optimizer.step()
    reference_optimizer.step()
    full_state = gather_full_state_dict(model)
    result["state_dict"] = full_state
    result["reference_state_dict"] = reference.state_dict()
    optimizer_state = gather_full_optimizer_state_dict(optimizer, model)
    result["optimizer_state"] = adam_moments(optimizer_state)
    result["reference_optimizer_state"] = adam_moments(reference_optimizer.state_dict())

    # Round trips: full -> a fresh sharded model (and its optimizer), full -> an unsharded model.
    fresh = TwoMemories(seed=5)
    shard_value_tables(fresh, group_size)
    fresh.load_state_dict(full_state)
    result["fresh_state_dict"] = gather_full_state_dict(fresh)
    fresh_optimizer = torch.optim.AdamW(param_groups(fresh, lr=1e-3, weight_decay=0.1))
    load_full_optimizer_state_dict(fresh_optimizer, optimizer_state, fresh)
    result["fresh_moments_match"] = all(
        torch.equal(a[k], b[k]) for a, b in zip(adam_moments(fresh_optimizer.state_dict()),
                                                 adam_moments(optimizer.state_dict())) for k in a)
    unsharded = TwoMemories(seed=6)
    unsharded.load_state_dict(full_state)
    result["unsharded_state_dict"] = unsharded.state_dict()
    try:
        fresh.load_state_dict(model.state_dict())  # a rank's own shard is not a checkpoint
        result["shard_load_error"] = None
    except RuntimeError as error:
        result["shard_load_error"] = str(error)
    try:
        shard_value_tables(TwoMemories(seed=0), 3 * world)
        result["world_error"] = None
    except ValueError as error:
        result["world_error"] = str(error)
    return result


def empty_and_amp(rank: int, world: int, group_size: int) -> Dict[str, object]:
    """A step where rank 0 has no tokens, a step under bf16 autocast, and a group whose ranks would pick different
    bag paths; each against the unsharded layer."""
    result: Dict[str, object] = {}
    reference = TwoMemories(seed=0)
    model = copy.deepcopy(reference)
    shard_value_tables(model, group_size)
    xs, _ = rank_data(world)
    xs[0] = xs[0][:0]
    x = xs[rank].clone().requires_grad_()
    out = model(x)
    out.square().sum().backward()
    result["empty_out_shape"] = tuple(out.shape)
    result["empty_x_grad_shape"] = tuple(x.grad.shape)
    result["empty_out"], result["empty_reference_out"] = out.detach(), reference(xs[rank]).detach()
    shard = model.first.values
    grad = shard.gather_full(shard.weight.grad)
    sum(reference(x_r).square().sum() for x_r in xs).backward()
    result["empty_grad"], result["empty_reference_grad"] = grad, reference.first.values.weight.grad

    xs, _ = rank_data(world)
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(xs[rank])
        reference_out = reference(xs[rank])
    result["amp_dtypes"] = (out.dtype, reference_out.dtype)
    result["amp_out"], result["amp_reference_out"] = out.detach().float(), reference_out.detach().float()

    used: List[str] = []
    implementations = dict(dispatch.BAG_IMPLEMENTATIONS)
    for name, fn in implementations.items():
        dispatch.BAG_IMPLEMENTATIONS[name] = lambda *a, name=name, fn=fn, **k: used.append(name) or fn(*a, **k)
    resolve = ops.resolve_bag_path
    ops.resolve_bag_path = lambda *a, **k: "dense" if dist.get_rank() == 0 else "torch"
    try:
        fresh = copy.deepcopy(reference)
        shard_value_tables(fresh, group_size)
        out = fresh(xs[rank])
        out.square().sum().backward()
        fresh(xs[rank])
    finally:
        ops.resolve_bag_path = resolve
        dispatch.BAG_IMPLEMENTATIONS.update(implementations)
    result["paths_used"] = used
    result["agreed_out"], result["agreed_reference_out"] = out.detach(), reference(xs[rank]).detach()
    return result


def worker(rank: int, world: int, group_sizes: List[int], init_file: str, out_dir: str) -> None:
    """Run each group size in turn; saves ``g{group_size}_rank{rank}.pt``."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    for group_size in group_sizes:
        result = run(rank, world, group_size)
        if group_size == world:
            result.update(empty_and_amp(rank, world, group_size))
        torch.save(result, Path(out_dir) / f"g{group_size}_rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)
