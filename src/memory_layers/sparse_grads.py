"""Sparse value gradients in a training loop (``MemoryConfig.sparse_value_grad``).

A :class:`ValueTable` built with ``sparse_grad=True`` gets a sparse COO gradient holding the rows a step read. What a
training loop does with gradients must take it:

- the optimizer: :class:`memory_layers.RowwiseAdamW` (``torch.optim.AdamW`` refuses sparse gradients);
- accumulation: autograd adds the sparse gradients of the sharing layers and of the micro-batches by concatenating
  their rows, so ``.grad`` grows with every backward; :func:`coalesce_sparse_grads` after each backward keeps it
  to at most one row per slot;
- clipping: ``torch.nn.utils.clip_grad_norm_`` (and :func:`~memory_layers.values_parallel.sharded_clip_grad_norm_`)
  counts a sparse gradient's rows correctly, coalesced or not, and scales it in place;
- data parallelism: DDP's reducer takes sparse gradients only from ``nn.Embedding``/``nn.EmbeddingBag`` modules and
  fails on a value table's. DDP must ignore these tables (:func:`sparse_grad_parameter_names`, for
  ``DistributedDataParallel._set_params_and_buffers_to_ignore_for_model``); the loop then broadcasts them from rank
  0 once, as DDP does for the parameters it keeps (:func:`broadcast_sparse_grad_tables`), and averages their
  gradients once per optimizer step, after the last backward and before clipping (:func:`sync_sparse_value_grads`):
  one ``all_reduce`` of the sparse gradient where the backend takes sparse tensors (gloo), else (NCCL refuses them)
  one ``all_reduce`` of the gradient made dense, with one more column counting the ranks that read each row, turned
  back into a sparse gradient of the rows any rank read. Both give every rank the gradient, and the rows, of the
  global batch, so the lazy optimizer steps the same rows as one process would.

Every function documented as collective must be called by all ranks of the group, in the same order.
"""
from __future__ import annotations

from typing import Iterable, List, Optional

import torch
import torch.distributed as dist
from torch import nn

from .values import ValueTable


def sparse_grad_tables(model: nn.Module) -> List[ValueTable]:
    """The trainable value tables of ``model`` with sparse gradients, each once (shared tables appear once), in
    module order (the same on every rank)."""
    tables: List[ValueTable] = []
    seen = set()
    for module in model.modules():
        if isinstance(module, ValueTable) and module.sparse_grad and module.weight.requires_grad \
                and id(module) not in seen:
            seen.add(id(module))
            tables.append(module)
    return tables


def sparse_grad_parameter_names(model: nn.Module) -> List[str]:
    """Names (every alias) of the weights of :func:`sparse_grad_tables`, for
    ``DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names)``."""
    ids = {id(t.weight) for t in sparse_grad_tables(model)}
    return [name for name, param in model.named_parameters(remove_duplicate=False) if id(param) in ids]


def coalesce_sparse_grads(parameters: Iterable[torch.Tensor]) -> None:
    """Coalesce every sparse ``.grad`` among ``parameters`` (one row per slot read); dense ones are left alone."""
    for param in parameters:
        if param.grad is not None and param.grad.is_sparse and not param.grad.is_coalesced():
            param.grad = param.grad.coalesce()


def broadcast_sparse_grad_tables(model: nn.Module, src: int = 0, group: Optional[dist.ProcessGroup] = None) -> int:
    """Copy rank ``src``'s weights of :func:`sparse_grad_tables` to every rank (collective); returns the number of
    tables. DDP broadcasts the parameters it keeps when it is built; it ignores these."""
    tables = sparse_grad_tables(model)
    for table in tables:
        with torch.no_grad():
            dist.broadcast(table.weight.data, src=src, group=group)
        table.drop_read_copy()
    return len(tables)


def _takes_sparse(device: torch.device, group: Optional[dist.ProcessGroup]) -> bool:
    """Whether the group's backend for ``device`` all-reduces sparse tensors (gloo does, NCCL does not)."""
    backend = str(dist.get_backend(group))
    return backend == "gloo" or (device.type == "cpu" and "cpu:gloo" in backend)


def _all_reduce_sparse(grad: torch.Tensor, group: Optional[dist.ProcessGroup]) -> torch.Tensor:
    """The sum over the group of a coalesced sparse (S, V) gradient, by the backend's sparse ``all_reduce``."""
    dist.all_reduce(grad, group=group)
    return grad.coalesce()


def _all_reduce_densified(grad: torch.Tensor, group: Optional[dist.ProcessGroup]) -> torch.Tensor:
    """The sum over the group of a coalesced sparse (S, V) gradient, through one dense ``all_reduce`` of (S, V + 1):
    the gradient and a column counting the ranks that read each row. Coalesced, holding the rows any rank read."""
    rows, values = grad.indices()[0], grad.values()
    dense = torch.zeros(grad.shape[0], grad.shape[1] + 1, dtype=values.dtype, device=values.device)
    dense[rows, :-1] = values
    dense[rows, -1] = 1
    dist.all_reduce(dense, group=group)
    read = dense[:, -1].nonzero().squeeze(1)
    return torch.sparse_coo_tensor(read.unsqueeze(0), dense[read, :-1], tuple(grad.shape), is_coalesced=True,
                                   check_invariants=False)


def sync_sparse_value_grads(model: nn.Module, group: Optional[dist.ProcessGroup] = None) -> int:
    """Average the sparse gradients of :func:`sparse_grad_tables` over the group, as DDP averages the others: the
    sum over ranks divided by the group size, coalesced (collective; a no-op without torch.distributed or with one
    rank). Call once per optimizer step, after the last backward and before clipping or the optimizer step.

    A table no rank read keeps no gradient (the optimizer skips it, as with one process). Returns the number of
    tables averaged.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return 0
    world = dist.get_world_size(group)
    tables = sparse_grad_tables(model)
    if world == 1:
        return 0
    for table in tables:
        weight = table.weight
        local = weight.grad
        if local is None:  # every rank must join the collective
            local = torch.sparse_coo_tensor(torch.zeros(1, 0, dtype=torch.long, device=weight.device),
                                            weight.new_zeros(0, weight.shape[1]), tuple(weight.shape),
                                            is_coalesced=True, check_invariants=False)
        local = local.coalesce()
        reduce = _all_reduce_sparse if _takes_sparse(weight.device, group) else _all_reduce_densified
        total = reduce(local, group)
        weight.grad = total.div_(world) if total._nnz() else None
    return len(tables)
