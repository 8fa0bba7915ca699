"""Worker for the sparse-gradient gloo test, and the small models both use (a module of its own so spawned processes
can import it)."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from memory_layers import ValueTable
from memory_layers.sparse_grads import (_all_reduce_densified, broadcast_sparse_grad_tables, coalesce_sparse_grads,
                                        sync_sparse_value_grads)


class Reader(nn.Module):
    """A value table and a linear head."""

    def __init__(self, sparse: bool, n_slots: int = 64, v_dim: int = 6) -> None:
        super().__init__()
        self.table = ValueTable(n_slots, v_dim, lr=0.05, sparse_grad=sparse)
        self.head = nn.Linear(v_dim, 1)


def twins():
    """Two equal readers: dense gradient, sparse gradient."""
    torch.manual_seed(0)
    dense, sparse = Reader(False), Reader(True)
    sparse.load_state_dict(dense.state_dict())
    return dense, sparse


def read(model: Reader, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Two reads of the table (as two memory layers sharing it would), made into a loss."""
    first, second = model.table(indices, weights), model.table(indices.flip(0), weights.flip(0))
    return model.head(first).sum() + model.head(second).square().sum()


def reads(seed: int, tokens: int = 20, n_slots: int = 60):
    """(tokens, 3) slot ids in [0, n_slots) and their weights."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, n_slots, (tokens, 3), generator=generator), torch.rand(tokens, 3, generator=generator)


def rank_reads(rank: int):
    """Rank ``rank``'s reads of the 64-slot table: random slots below 60, and slot 60 + rank read with weight 0 (a row
    read whose gradient is zero)."""
    indices, weights = reads(rank)
    indices[0, 0], weights[0, 0] = 60 + rank, 0.0
    return indices, weights


def worker(rank: int, world: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model = twins()[1]
    if rank:
        with torch.no_grad():
            model.table.weight.add_(1.0)
    model.unread = ValueTable(8, 6, sparse_grad=True)
    broadcast_sparse_grad_tables(model)
    read(model, *rank_reads(rank)).backward()
    coalesce_sparse_grads(model.parameters())
    local = model.table.weight.grad.clone()
    result = {"table": model.table.weight.detach().clone()}
    assert sync_sparse_value_grads(model) == 2
    grad = model.table.weight.grad
    result["sparse"] = {"rows": grad.indices()[0], "values": grad.values()}
    densified = _all_reduce_densified(local, None).div_(world)
    result["densified"] = {"rows": densified.indices()[0], "values": densified.values()}
    result["unread_table_grad"] = model.unread.weight.grad
    torch.save(result, os.path.join(out, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)
