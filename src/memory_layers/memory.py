"""`ProductKeyMemory`: a product-key memory layer (Lample et al. 2019; Berges et al. 2024)."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import ops
from .config import MemoryConfig
from .ops.runtime import autocast_enabled
from .usage import SlotUsage
from .values import ValueTable

# fold the query projection into the sub-keys only when the batch is this many times longer than break-even
FOLD_MARGIN = 2


def create_value_table(config: MemoryConfig, v_dim: int) -> ValueTable:
    """A value table sized for ``config``, with its lr and weight decay."""
    return ValueTable(config.n_slots, v_dim, lr=config.value_lr, weight_decay=config.value_weight_decay,
                      sparse_grad=config.sparse_value_grad)


class ProductKeyMemory(nn.Module):
    """Product-key memory: (..., input_dim) -> (..., output_dim).

    The read-out, per token x:
        1. q = query_proj(x), optionally batch-normed, split into ``heads`` queries of width ``k_dim``;
        2. product-key search: scores of each query half against ``n_keys`` sub-keys (in fp32), top-knn per half,
           then top-knn over the sums of the rank pairs that can win (exact: equals a search over all
           ``n_keys ** 2`` slots);
        3. softmax in fp32 over each head's knn scores;
        4. one embedding bag over the ``heads * knn`` weighted value rows -> (T, v_dim);
        5. with ``swilu``: bag * silu(swilu_proj(x)), then ``value_proj`` back to ``output_dim``;
        6. with ``gated``: times sigmoid(gate(x)).

    Args:
        input_dim: width of the input tokens.
        output_dim: width of the output (the block width when it replaces an MLP).
        config: the memory knobs (``layers`` and ``mode`` are ignored here; they concern placement).
        values: a shared :class:`ValueTable`; when None the layer creates its own. Its width must equal
            ``config.value_dim(output_dim)``.
        backend: the ops' backend for this layer (``auto``, ``torch``, ``triton``); None: ``MEMORY_LAYERS_BACKEND``,
            else ``auto`` (see :mod:`memory_layers.ops.dispatch`). A runtime choice, not part of the config.
        bag_path: the embedding-bag path (``auto``, ``fused``, ``dense``); None: ``MEMORY_LAYERS_BAG_PATH``.
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        config: MemoryConfig,
        values: Optional[ValueTable] = None,
        *,
        backend: Optional[str] = None,
        bag_path: Optional[str] = None,
    ) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.config = config
        self.heads = config.heads
        self.k_dim = config.k_dim
        self.knn = config.knn
        self.n_keys = config.n_keys
        self.v_dim = config.value_dim(output_dim)
        self.backend = backend
        self.bag_path = bag_path

        if values is None:
            values = create_value_table(config, self.v_dim)
        elif values.v_dim != self.v_dim or values.n_slots != config.n_slots:
            raise ValueError(
                f"shared value table is ({values.n_slots}, {values.v_dim}) but this layer needs "
                f"({config.n_slots}, {self.v_dim})"
            )
        self.values = values

        self.input_dropout = nn.Dropout(config.input_dropout)
        self.query_proj = nn.Linear(input_dim, config.heads * config.k_dim)
        self.query_norm = nn.BatchNorm1d(config.heads * config.k_dim) if config.query_batchnorm else None
        self.query_dropout = nn.Dropout(config.query_dropout)
        self.keys = nn.Parameter(torch.empty(config.heads, 2, config.n_keys, config.k_dim // 2))
        self.value_dropout = nn.Dropout(config.value_dropout)
        self.swilu_proj = nn.Linear(input_dim, self.v_dim) if config.swilu else None
        needs_projection = config.swilu or self.v_dim != output_dim
        self.value_proj = nn.Linear(self.v_dim, output_dim) if needs_projection else None
        self.gate = nn.Linear(input_dim, 1) if config.gated else None
        self._usage: Optional[SlotUsage] = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise every parameter and bias (shared values are initialised by their owner)."""
        bound = 1.0 / math.sqrt(self.k_dim)
        nn.init.uniform_(self.keys, -bound, bound)
        nn.init.xavier_uniform_(self.query_proj.weight)
        nn.init.zeros_(self.query_proj.bias)
        if self.query_norm is not None:
            self.query_norm.reset_parameters()
        if self.swilu_proj is not None:
            nn.init.normal_(self.swilu_proj.weight, std=1.0 / math.sqrt(self.v_dim))
            nn.init.zeros_(self.swilu_proj.bias)
        if self.value_proj is not None:
            nn.init.normal_(self.value_proj.weight, std=1.0 / math.sqrt(self.output_dim))
            nn.init.zeros_(self.value_proj.bias)
        if self.gate is not None:
            nn.init.normal_(self.gate.weight, std=1.0 / math.sqrt(self.input_dim))
            nn.init.zeros_(self.gate.bias)

    def half_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Scores of each query half against its sub-keys, in fp32: x (T, input_dim) -> (T, heads, 2, n_keys).

        When the queries are a plain projection (no batch norm, no active query dropout, no autocast) and a long
        batch makes it cheaper, the projection and the sub-keys are folded into one (input_dim, heads * 2 * n_keys)
        matrix first: ``x @ (W_q . keys) + b_q . keys``, the same sums in another order (equal up to fp32
        rounding), and a GEMM of 2 * n_keys columns per head instead of k_dim (half as many for ViT-B-16-mem).
        """
        tokens = x.shape[0]
        if self._folds_query(x):
            return self._folded_half_scores(x)
        query = self.query_proj(x)
        if self.query_norm is not None:
            query = self.query_norm(query)
        query = self.query_dropout(query).view(tokens, self.heads, self.k_dim)
        return ops.half_scores(query, self.keys)

    def _folds_query(self, x: torch.Tensor) -> bool:
        plain = self.query_norm is None and not (self.training and self.config.query_dropout > 0)
        # the fold saves k_dim - 2 * n_keys columns per token and head (nothing unless 2 * n_keys < k_dim); building
        # the folded matrix costs about n_keys * k_dim / (k_dim - 2 * n_keys) tokens' worth of that
        long_enough = x.shape[0] * (self.k_dim - 2 * self.n_keys) > FOLD_MARGIN * self.n_keys * self.k_dim
        return plain and long_enough and x.dtype == torch.float32 and not autocast_enabled(x.device.type)

    def _folded_half_scores(self, x: torch.Tensor) -> torch.Tensor:
        half = self.k_dim // 2
        weight = self.query_proj.weight.view(self.heads, 2, half, self.input_dim)
        matrix = torch.einsum("hpdi,hpnd->ihpn", weight, self.keys).reshape(self.input_dim, -1)
        bias = torch.einsum("hpd,hpnd->hpn", self.query_proj.bias.view(self.heads, 2, half), self.keys)
        return torch.addmm(bias.reshape(-1), x, matrix).view(x.shape[0], self.heads, 2, self.n_keys)

    def lookup(self, x: torch.Tensor, sorted: bool = True) -> "tuple[torch.Tensor, torch.Tensor]":
        """The slots a batch reads: x (T, input_dim) -> indices (T, heads * knn) int64, weights (T, heads * knn) fp32.

        Each head's weights are a softmax over its knn scores, so every head's weights sum to 1. With ``sorted``
        each head's slots come best first; the read-out does not need that order.
        """
        scores, indices = ops.topk_from_half_scores(self.half_scores(x), self.knn, self.backend,
                                                     sorted=sorted)
        weights = F.softmax(scores.float(), dim=-1)
        bag = self.heads * self.knn
        return indices.view(x.shape[0], bag), weights.view(x.shape[0], bag)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., input_dim) -> (..., output_dim)."""
        if x.shape[-1] != self.input_dim:
            raise ValueError(f"expected input width {self.input_dim}, got shape {tuple(x.shape)}")
        leading = x.shape[:-1]
        x = self.input_dropout(x.reshape(-1, self.input_dim))
        indices, weights = self.lookup(x, sorted=False)
        if self._usage is not None:
            self._usage.update(indices, weights)
        return self.read_out(x, indices, weights).reshape(*leading, self.output_dim)

    def read_out(self, x: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Steps 4-6 of the forward for given slots: x (T, input_dim), indices and weights (T, heads * knn) ->
        (T, output_dim). ``forward`` is ``read_out(x, *lookup(x))``; a caller may read other slots (the GPU check
        reads the fp32 layer at the slots an autocast run chose)."""
        bag = self.values(indices, weights, self.backend, self.bag_path)
        bag = self.value_dropout(bag)
        if self.swilu_proj is not None:
            swilu = F.silu(self.swilu_proj(x))
            bag = bag.to(swilu.dtype) * swilu
        out = self.value_proj(bag) if self.value_proj is not None else bag
        if self.gate is not None:
            out = out * torch.sigmoid(self.gate(x))
        return out

    def start_usage_tracking(self) -> SlotUsage:
        """Begin recording which slots this layer reads; returns the accumulator."""
        self._usage = SlotUsage(self.config.n_slots)
        return self._usage

    @property
    def usage_tracker(self) -> Optional[SlotUsage]:
        """The accumulator recording this layer's reads, or None when usage is not being tracked."""
        return self._usage

    def stop_usage_tracking(self) -> Optional[SlotUsage]:
        usage, self._usage = self._usage, None
        return usage

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"input_dim={self.input_dim}, output_dim={self.output_dim}, n_keys={c.n_keys} ({c.n_slots} slots), "
            f"heads={c.heads}, knn={c.knn}, k_dim={c.k_dim}, v_dim={self.v_dim}, swilu={c.swilu}, gated={c.gated}"
        )
