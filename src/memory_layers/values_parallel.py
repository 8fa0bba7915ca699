"""Values parallelism: a value table split by columns over a group of ranks.

A "shard" in this module (:class:`ShardedValueTable`, :func:`shard_value_tables`) is one rank's column slice of a
value table, not a tar file of training samples (memclip_train's webdataset shards).

With ``values_parallel_group_size = g`` the ranks form groups of ``g`` consecutive ranks ([0..g-1], [g..2g-1], ...).
Rank ``r`` of a group holds columns ``[r * V / g, (r + 1) * V / g)`` of every value table (V = v_dim), so each rank
stores ``1 / g`` of the table. A read, for the (T_r, B) bags of this rank's T_r tokens:

    1. all-gather the indices and weights of the group's tokens -> (T_total, B), rank order;
    2. read this rank's columns for all of them: embedding_bag(shard, indices, weights) -> (T_total, V / g);
    3. all-to-all: every owner receives its tokens' slices from each rank and concatenates them in rank order
       -> (T_r, V), the same rows the unsharded table gives.

Backward runs the same steps in reverse: the (T_r, V) output gradient is split by columns and sent to the rank that
read them (all-to-all); each rank's partial gradients of the bag weights (dot products over its columns) are sent
back to the owners and summed there (all-to-all + sum, i.e. a reduce-scatter); the shard's gradient accumulates
from every token of the group.

Gradient scaling (explicit, call :func:`sync_value_shard_grads` once per optimizer step, after the last backward and
before clipping or the optimizer step). DDP averages the other parameters' gradients over the world of W ranks; for
the unsharded table it would give ``(1 / W) * sum over all ranks' losses``. After backward a shard holds the sum
over its group's losses for its columns; ``sync_value_shard_grads`` all-reduces it over the *replica* group (the
ranks of other groups holding the same columns, when W > g) and divides by W, which is exactly that average. DDP
must ignore the shards (:func:`ddp_ignored_parameter_names`), since they differ between ranks. Gradient clipping
must use :func:`sharded_clip_grad_norm_`, whose norm counts each column slice once.

Checkpoints hold the full tables under the unsharded keys: :func:`gather_full_state_dict` (collective) builds one,
and loading a full table into a :class:`ShardedValueTable` keeps this rank's columns, so checkpoints move freely
between sharded and unsharded models. :func:`full_value_tables` (collective) swaps full copies in for saving or
rank-0-only evaluation; the optimizer state is gathered and sliced by :func:`gather_full_optimizer_state_dict` and
:func:`load_full_optimizer_state_dict`.

Every function documented as collective must be called by all ranks of the group (those that create groups or
touch replicas: all ranks of the world), in the same order.

No rank may read other than the group's rows, and the exchanges must match in size and dtype on every rank, so:
the token counts travel over a CPU (gloo) side group, host to host, without waiting for the GPU; the bag path
(fused or dense) is chosen once per shape by the group's first rank and broadcast (every rank then runs it), or,
under ``torch.compile`` and CUDA-graph capture, taken from the timing-free rule every rank computes alike; and
every path returns the same dtype (the bf16 copy's under autocast: the exchanges then move half the bytes).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn

from . import ops
from .ops import dispatch
from .values import ValueTable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValuesParallelGroups:
    """Where this rank sits for values parallelism.

    Attributes:
        group_size: ranks per group (g); this rank holds column slice ``rank_in_group`` of ``g``.
        world_size: ranks in the world (W), a multiple of ``group_size``.
        rank_in_group: this rank's position in its group (``global rank % g``).
        group: the process group of this rank's ``g`` consecutive ranks (they share one table).
        replicas: the ranks of the other groups holding the same column slice (``rank % g`` equal), or None when
            there is a single group.
        counts_group: a gloo group of the same ranks as ``group`` for host-side exchanges (token counts, the agreed
            bag path), so that they never wait for the GPU; ``group`` itself when it is a gloo group. None means
            ``group``.
    """

    group_size: int
    world_size: int
    rank_in_group: int
    group: Any
    replicas: Optional[Any]
    counts_group: Optional[Any] = None

    @property
    def host_group(self) -> Any:
        """The group for host-side (CPU tensor) exchanges."""
        return self.group if self.counts_group is None else self.counts_group


def _check_group_size(group_size: int) -> None:
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"values_parallel_group_size={group_size!r}: must be a positive integer")


def new_values_parallel_groups(group_size: int) -> ValuesParallelGroups:
    """Create the groups of ``group_size`` consecutive ranks (and the replica groups). Collective over the world.

    Raises:
        ValueError: ``group_size`` is not a positive integer, or does not divide the world size.
        RuntimeError: torch.distributed is not initialised.
    """
    _check_group_size(group_size)
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"values_parallel_group_size={group_size} needs torch.distributed to be initialised "
                           "(dist.init_process_group) before the value tables are sharded")
    world, rank = dist.get_world_size(), dist.get_rank()
    if world % group_size:
        raise ValueError(f"values_parallel_group_size={group_size} must divide the world size {world}")
    group = replicas = counts_group = None
    host_side = "gloo" not in str(dist.get_backend()).lower()
    for start in range(0, world, group_size):  # every rank creates every group, in the same order
        ranks = list(range(start, start + group_size))
        created = dist.new_group(ranks)
        created_host = dist.new_group(ranks, backend="gloo") if host_side else None
        if start <= rank < start + group_size:
            group, counts_group = created, created_host
    if world > group_size:
        for column in range(group_size):
            created = dist.new_group(list(range(column, world, group_size)))
            if rank % group_size == column:
                replicas = created
    return ValuesParallelGroups(group_size, world, rank % group_size, group, replicas, counts_group)


# ---------------------------------------------------------------------------------------------- communication
def _exchange(tensor: torch.Tensor, send_counts: Sequence[int], receive_counts: Sequence[int],
              group: Any) -> torch.Tensor:
    """all_to_all_single along dim 0: rows ``send_counts[i]`` go to group rank i; returns the rows received."""
    out = tensor.new_empty((sum(receive_counts), *tensor.shape[1:]))
    dist.all_to_all_single(out, tensor.contiguous(), output_split_sizes=list(receive_counts),
                           input_split_sizes=list(send_counts), group=group)
    return out


def _gather_rows(tensor: torch.Tensor, counts: Sequence[int], group: Any) -> torch.Tensor:
    """All-gather (T_r, ...) tensors of different lengths ``counts`` -> (sum(counts), ...), in rank order."""
    longest = max(counts)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    buckets = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(buckets, padded, group=group)
    return torch.cat([bucket[:count] for bucket, count in zip(buckets, counts)])


def _token_counts(tokens: int, groups: ValuesParallelGroups) -> List[int]:
    """Every group rank's token count: a small all-gather of CPU tensors over the host-side group, so the host
    never waits for the GPU to drain its queue (the counts are shapes, which the host knows)."""
    mine = torch.tensor([tokens], dtype=torch.long)
    counts = [torch.empty_like(mine) for _ in range(groups.group_size)]
    dist.all_gather(counts, mine, group=groups.host_group)
    return [int(c) for c in torch.cat(counts).tolist()]


class _GatherBagWeights(torch.autograd.Function):
    """(T_r, B) weights -> (T_total, B) of the whole group. Backward: each owner sums its rows' partial gradients
    from every rank (the partial dot products over each rank's columns)."""

    @staticmethod
    def forward(ctx, weights: torch.Tensor, counts: List[int], groups: ValuesParallelGroups) -> torch.Tensor:
        ctx.counts, ctx.groups = counts, groups
        return _gather_rows(weights, counts, groups.group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        counts, groups = ctx.counts, ctx.groups
        mine = counts[groups.rank_in_group]
        partials = _exchange(grad, counts, [mine] * groups.group_size, groups.group)
        return partials.view(groups.group_size, mine, *grad.shape[1:]).sum(dim=0), None, None


class _ReturnToOwners(torch.autograd.Function):
    """(T_total, V / g) column slices of the group's tokens -> (T_r, V) full rows of this rank's tokens.
    Backward: the (T_r, V) gradient's column slices go back to the ranks that read them."""

    @staticmethod
    def forward(ctx, part: torch.Tensor, counts: List[int], groups: ValuesParallelGroups) -> torch.Tensor:
        ctx.counts, ctx.groups = counts, groups
        g, mine = groups.group_size, counts[groups.rank_in_group]
        received = _exchange(part, counts, [mine] * g, groups.group)  # (g * T_r, V / g), slice-major
        return received.view(g, mine, part.shape[1]).transpose(0, 1).reshape(mine, g * part.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        counts, groups = ctx.counts, ctx.groups
        g, mine = groups.group_size, counts[groups.rank_in_group]
        slices = grad.reshape(mine, g, grad.shape[1] // g).transpose(0, 1).reshape(g * mine, grad.shape[1] // g)
        return _exchange(slices, [mine] * g, counts, groups.group), None, None


# ---------------------------------------------------------------------------------------------- the table
IMPLEMENTATIONS = tuple(dispatch.BAG_IMPLEMENTATIONS)


class ShardedValueTable(ValueTable):
    """This rank's column slice of a value table; reads return full rows.

    A subclass of :class:`ValueTable`, so :func:`memory_layers.param_groups` gives its weight the table's lr and
    weight decay, and :class:`ProductKeyMemory` accepts it. ``n_slots`` and ``v_dim`` describe the full table; the
    parameter ``weight`` is (n_slots, v_dim // group_size). Build one from a full table with :meth:`from_full` (or
    :func:`shard_value_tables` for a whole model).

    ``state_dict()`` holds the local shard; loading accepts only a full (n_slots, v_dim) table and keeps this rank's
    columns. Use :func:`gather_full_state_dict` for a checkpoint.

    Args:
        shard: (n_slots, v_dim // group_size) this rank's columns.
        v_dim: the full row width.
        groups: the process groups (:func:`new_values_parallel_groups`).
        lr, weight_decay: the table's fixed learning rate and weight decay.
    """

    def __init__(self, shard: torch.Tensor, v_dim: int, groups: ValuesParallelGroups, lr: float = 1e-3,
                 weight_decay: float = 0.0) -> None:
        nn.Module.__init__(self)  # not ValueTable.__init__: it would allocate the full table
        if v_dim % groups.group_size:
            raise ValueError(f"v_dim={v_dim} is not divisible by values_parallel_group_size={groups.group_size}")
        if shard.dim() != 2 or shard.shape[1] * groups.group_size != v_dim:
            raise ValueError(f"a shard of a table of width {v_dim} over {groups.group_size} ranks must be "
                             f"(n_slots, {v_dim // groups.group_size}), got {tuple(shard.shape)}")
        self.n_slots = shard.shape[0]
        self.v_dim = v_dim
        self.lr = lr
        self.weight_decay = weight_decay
        self.groups = groups
        self.sparse_grad = False
        self.weight = nn.Parameter(shard)
        self._read_copy = None
        self._agreed_paths: Dict[tuple, str] = {}

    @classmethod
    def from_full(cls, table: ValueTable, groups: ValuesParallelGroups) -> "ShardedValueTable":
        """This rank's columns of ``table`` (copied; same device, dtype and requires_grad).

        Raises:
            ValueError: ``table`` has sparse gradients (not supported for shards).
        """
        if table.sparse_grad:
            raise ValueError("a value table with sparse_grad=True cannot be sharded (values_parallel_group_size > 1): "
                             "its shards' gradients are all-reduced dense")
        shard = table.weight.detach()[:, cls._columns(table.v_dim, groups)].clone()
        sharded = cls(shard, table.v_dim, groups, lr=table.lr, weight_decay=table.weight_decay)
        sharded.weight.requires_grad_(table.weight.requires_grad)
        return sharded

    @staticmethod
    def _columns(v_dim: int, groups: ValuesParallelGroups) -> slice:
        width = v_dim // groups.group_size
        return slice(groups.rank_in_group * width, (groups.rank_in_group + 1) * width)

    @property
    def columns(self) -> slice:
        """The columns of the full table this rank holds."""
        return self._columns(self.v_dim, self.groups)

    def reset_parameters(self) -> None:
        """Re-initialise this rank's slice (the full table's distribution; replicas are not synchronised)."""
        nn.init.normal_(self.weight, mean=0.0, std=self.v_dim ** -0.5)

    def forward(self, indices: torch.Tensor, weights: torch.Tensor, backend: Optional[str] = None,
                path: Optional[str] = None) -> torch.Tensor:
        """Read bags: indices and weights (T_r, B) -> (T_r, v_dim) full rows. Collective over the group.

        Every rank of the group must call it (same B; T_r may differ, including 0). ``backend`` and ``path`` choose
        the ops as in :class:`memory_layers.ValueTable`; with ``auto`` the group runs the path its first rank
        chose (:meth:`agreed_implementation`). The output is in the shard's dtype, or the autocast dtype under
        autocast, as for the unsharded table.
        """
        if indices.dim() != 2 or weights.shape != indices.shape:
            raise ValueError(f"indices and weights must both be (tokens, bag), got {tuple(indices.shape)} and "
                             f"{tuple(weights.shape)}")
        read = self.read_copy()
        if self.groups.group_size == 1:
            return ops.embedding_bag(self.weight, indices, weights, backend, path, read_values=read)
        counts = _token_counts(indices.shape[0], self.groups)
        group_indices = _gather_rows(indices, counts, self.groups.group)
        group_weights = _GatherBagWeights.apply(weights, counts, self.groups)
        implementation = self.agreed_implementation(group_indices, group_weights, read, backend, path)
        part = ops.embedding_bag(self.weight, group_indices, group_weights, read_values=read,
                                 implementation=implementation)
        return _ReturnToOwners.apply(part, counts, self.groups)

    def agreed_implementation(self, indices: torch.Tensor, weights: torch.Tensor, read: Optional[torch.Tensor],
                              backend: Optional[str], path: Optional[str]) -> str:
        """The bag implementation (``torch``, ``triton`` or ``dense``) every rank of the group runs for a read of
        the group's (T_total, B) ``indices`` and ``weights``. Collective over the group on the first call per shape.

        The group's first rank resolves it (timing the paths with ``auto``) and broadcasts it over the host-side
        group; the others never time anything, and all cache the agreed choice per shape, so ranks can never run
        paths of different output sizes or dtypes into the exchange (a hang, or garbage). Under ``torch.compile``
        or CUDA-graph capture a shape not yet agreed takes :func:`memory_layers.ops.dispatch.rule_bag_path`, which
        depends on the shapes alone and so agrees without communication.
        """
        grad = torch.is_grad_enabled() and (self.weight.requires_grad or weights.requires_grad)
        key = (tuple(self.weight.shape), indices.shape[1], dispatch.dense_compute_dtype(self.weight, read),
               weights.dtype, dispatch._token_bucket(indices.shape[0]), grad, dispatch.backend_choice(backend),
               dispatch.bag_path_choice(path))
        agreed = self._agreed_paths.get(key)
        if agreed is not None:
            return agreed
        first = self.groups.rank_in_group == 0
        if dispatch.is_capturing(self.weight.device):
            return ops.resolve_bag_path(self.weight, indices, weights, backend, path, read, measure=False)
        local = ops.resolve_bag_path(self.weight, indices, weights, backend, path, read, measure=first)
        code = torch.tensor([IMPLEMENTATIONS.index(local)], dtype=torch.long)
        dist.broadcast(code, src=dist.get_rank() - self.groups.rank_in_group, group=self.groups.host_group)
        agreed = IMPLEMENTATIONS[int(code.item())]
        self._agreed_paths[key] = agreed
        if agreed != local:
            logger.debug("rank %d runs the %s bag path its group's first rank chose (it would have run %s)",
                         dist.get_rank(), agreed, local)
        return agreed

    def gather_full(self, shard: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The full (n_slots, v_dim) tensor from every rank's (n_slots, v_dim // g) ``shard`` (default: the weight;
        e.g. its gradient or an optimizer moment). Collective over the group; no autograd."""
        shard = (self.weight if shard is None else shard).detach().contiguous()
        if self.groups.group_size == 1:
            return shard.clone()
        pieces = [torch.empty_like(shard) for _ in range(self.groups.group_size)]
        dist.all_gather(pieces, shard, group=self.groups.group)
        return torch.cat(pieces, dim=1)

    def to_full(self) -> ValueTable:
        """An unsharded :class:`ValueTable` holding the gathered table (a copy). Collective over the group."""
        with torch.device("meta"):
            table = ValueTable(self.n_slots, self.v_dim, lr=self.lr, weight_decay=self.weight_decay)
        table.weight = nn.Parameter(self.gather_full(), requires_grad=self.weight.requires_grad)
        return table

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        key = prefix + "weight"
        if key in state_dict:
            value = state_dict[key]
            full = (self.n_slots, self.v_dim)
            if tuple(value.shape) != full:
                error_msgs.append(f"{key}: a sharded value table loads the full {full} table (it keeps columns "
                                  f"{self.columns.start}:{self.columns.stop}); got {tuple(value.shape)}. Save "
                                  "checkpoints with memory_layers.gather_full_state_dict.")
                return
            state_dict = {**state_dict, key: value[:, self.columns]}
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, columns={self.columns.start}:{self.columns.stop}, "
                f"group_size={self.groups.group_size}")


# ---------------------------------------------------------------------------------------------- whole models
def _unique(model: nn.Module, kind: type) -> List[nn.Module]:
    found, seen = [], set()
    for module in model.modules():
        if isinstance(module, kind) and id(module) not in seen:
            seen.add(id(module))
            found.append(module)
    return found


def value_shards(model: nn.Module) -> List[ShardedValueTable]:
    """The model's sharded value tables, each once (a shared table is one object)."""
    return _unique(model, ShardedValueTable)


def _swap_modules(model: nn.Module, replacements: Dict[int, nn.Module]) -> None:
    """Replace every child ``c`` of any module in ``model`` with ``replacements[id(c)]`` (shared stays shared)."""
    for module in list(model.modules()):
        for name, child in list(module._modules.items()):
            if child is not None and id(child) in replacements:
                module._modules[name] = replacements[id(child)]


def shard_value_tables(model: nn.Module, group_size: int) -> int:
    """Replace every :class:`ValueTable` in ``model`` by a :class:`ShardedValueTable` of this rank's columns.

    Collective over the world: creates the groups, and broadcasts each full table from rank 0 before slicing (the
    shards are ignored by DDP, which would otherwise do that). A table shared by several layers becomes one shared
    sharded table. Call it before building the optimizer and before wrapping the model in DDP.

    Returns:
        The number of tables sharded.
    Raises:
        ValueError: a bad ``group_size``, one that does not divide a table's v_dim or the world size.
        RuntimeError: torch.distributed is not initialised.
    """
    _check_group_size(group_size)
    tables = [t for t in _unique(model, ValueTable) if not isinstance(t, ShardedValueTable)]
    for table in tables:
        if table.v_dim % group_size:
            raise ValueError(f"values_parallel_group_size={group_size} does not divide the value table's "
                             f"v_dim={table.v_dim}")
    groups = new_values_parallel_groups(group_size)
    replacements: Dict[int, nn.Module] = {}
    for table in tables:
        with torch.no_grad():
            dist.broadcast(table.weight.data, src=0)
        replacements[id(table)] = ShardedValueTable.from_full(table, groups)
    _swap_modules(model, replacements)
    logger.info("sharded %d value table(s) by columns over groups of %d ranks (world %d)", len(tables), group_size,
                groups.world_size)
    return len(tables)


def ddp_ignored_parameter_names(model: nn.Module) -> List[str]:
    """Names (every alias) of the shard parameters, for
    ``DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names)``."""
    ids = {id(t.weight) for t in value_shards(model)}
    return [name for name, param in model.named_parameters(remove_duplicate=False) if id(param) in ids]


def sync_value_shard_grads(model: nn.Module) -> None:
    """Turn each shard's gradient into the DDP average: all-reduce over the replica group, divide by the world size.

    Collective over the world; call once per optimizer step after the last backward (after gradient accumulation)
    and before clipping or stepping. Shards without a gradient are skipped (on every rank alike).
    """
    for table in value_shards(model):
        grad = table.weight.grad
        if grad is None:
            continue
        if table.groups.replicas is not None:
            dist.all_reduce(grad, group=table.groups.replicas)
        grad.div_(table.groups.world_size)


def _norm_squared(grads: List[torch.Tensor], device: torch.device) -> torch.Tensor:
    """The sum of the squared 2-norms of ``grads`` (fp32, on ``device``). Plain ``linalg.vector_norm`` per tensor,
    which every torch the requirements allow has (``nn.utils.get_total_norm`` appeared in torch 2.6)."""
    total = torch.zeros((), device=device, dtype=torch.float32)
    for grad in grads:
        values = grad.coalesce().values() if grad.is_sparse else grad
        total = total + torch.linalg.vector_norm(values.detach(), 2.0, dtype=torch.float32).to(device) ** 2
    return total


def _scale_grads(grads: List[torch.Tensor], max_norm: float, total: torch.Tensor) -> None:
    """Multiply ``grads`` in place by ``min(1, max_norm / (total + 1e-6))``, as ``clip_grad_norm_`` does."""
    coefficient = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for grad in grads:
        grad.mul_(coefficient.to(grad.device, grad.dtype))


def sharded_clip_grad_norm_(parameters: Iterable[torch.Tensor], max_norm: float, model: nn.Module) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` (2-norm) where the shards of ``model`` count once per column slice.

    Every rank gets the norm of the full (unsharded) gradient, so all ranks clip alike. Collective over the groups
    when ``parameters`` hold shards; call after :func:`sync_value_shard_grads`. Returns the total norm (fp32).
    """
    params = [p for p in parameters if p.grad is not None]
    shard_groups = {id(t.weight): t.groups for t in value_shards(model)}
    if not any(id(p) in shard_groups for p in params):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    device = params[0].grad.device
    per_group: Dict[int, tuple] = {}
    for param in params:
        if id(param) in shard_groups:
            groups = shard_groups[id(param)]
            per_group.setdefault(id(groups), (groups, []))[1].append(param.grad)
    total = _norm_squared([p.grad for p in params if id(p) not in shard_groups], device)
    for groups, grads in per_group.values():
        local = _norm_squared(grads, device)
        dist.all_reduce(local, group=groups.group)
        total = total + local
    total = total.sqrt()
    _scale_grads([p.grad for p in params], max_norm, total)
    return total


# ---------------------------------------------------------------------------------------------- checkpoints
@contextlib.contextmanager
def full_value_tables(model: nn.Module) -> Iterator[nn.Module]:
    """Inside, ``model`` holds full :class:`ValueTable` copies in place of its shards; afterwards the shards return.

    Collective over the groups (it gathers every shard; a no-op without shards). For saving (``state_dict``,
    ``save_pretrained``) or rank-0-only evaluation; changes to the copies are discarded. Every rank holds the
    full tables while inside.
    """
    shards = value_shards(model)
    if not shards:
        yield model
        return
    full = {id(shard): shard.to_full() for shard in shards}
    _swap_modules(model, full)
    try:
        yield model
    finally:
        _swap_modules(model, {id(full[id(shard)]): shard for shard in shards})


def gather_full_state_dict(model: nn.Module) -> Dict[str, torch.Tensor]:
    """``model.state_dict()`` with every shard replaced by its full table, under the unsharded keys.

    Collective over the groups: every rank calls it (and gets the full dict). It loads into the unsharded model and,
    through :class:`ShardedValueTable`'s loader, into a sharded one.
    """
    with full_value_tables(model):
        return model.state_dict()


def _shard_positions(optimizer: torch.optim.Optimizer, packed_groups: Sequence[Dict[str, Any]],
                     model: nn.Module) -> Dict[Any, ShardedValueTable]:
    """Optimizer state-dict index -> shard, matching ``packed_groups`` (a state dict's) to the live groups."""
    by_param = {id(t.weight): t for t in value_shards(model)}
    positions = {}
    for group, packed in zip(optimizer.param_groups, packed_groups):
        for param, index in zip(group["params"], packed["params"]):
            if id(param) in by_param:
                positions[index] = by_param[id(param)]
    return positions


def gather_full_optimizer_state_dict(optimizer: torch.optim.Optimizer, model: nn.Module) -> Dict[str, Any]:
    """``optimizer.state_dict()`` with each shard's parameter-shaped state (e.g. Adam moments) gathered to full
    tables, so it loads into an optimizer of the unsharded model. Collective over the groups."""
    state_dict = optimizer.state_dict()
    positions = _shard_positions(optimizer, state_dict["param_groups"], model)
    if not positions:
        return state_dict
    state = dict(state_dict["state"])
    for index, table in positions.items():
        if index in state:
            state[index] = {key: table.gather_full(value) if _is_shard_shaped(value, table) else value
                            for key, value in state[index].items()}
    return {**state_dict, "state": state}


def load_full_optimizer_state_dict(optimizer: torch.optim.Optimizer, state_dict: Dict[str, Any],
                                   model: nn.Module) -> None:
    """``optimizer.load_state_dict`` for a state dict with full-table states (from
    :func:`gather_full_optimizer_state_dict` or an unsharded run): keeps this rank's columns of each shard's state.
    ``state_dict`` is not modified."""
    positions = _shard_positions(optimizer, state_dict["param_groups"], model)
    if positions:
        state = dict(state_dict["state"])
        for index, table in positions.items():
            if index in state:
                state[index] = {key: value[:, table.columns].clone() if _is_full_shaped(value, table) else value
                                for key, value in state[index].items()}
        state_dict = {**state_dict, "state": state}
    optimizer.load_state_dict(state_dict)


def _is_shard_shaped(value: Any, table: ShardedValueTable) -> bool:
    return torch.is_tensor(value) and value.shape == table.weight.shape


def _is_full_shaped(value: Any, table: ShardedValueTable) -> bool:
    return torch.is_tensor(value) and tuple(value.shape) == (table.n_slots, table.v_dim)


__all__ = [
    "ShardedValueTable",
    "ValuesParallelGroups",
    "ddp_ignored_parameter_names",
    "full_value_tables",
    "gather_full_optimizer_state_dict",
    "gather_full_state_dict",
    "load_full_optimizer_state_dict",
    "new_values_parallel_groups",
    "shard_value_tables",
    "sharded_clip_grad_norm_",
    "sync_value_shard_grads",
    "value_shards",
]
