"""`MemoryConfig`: every knob of a product-key memory, validated when built."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Type, TypeVar

MODES = ("replace", "parallel")
TRAINING_STEP_FIELDS = ("sparse_value_grad", "values_parallel_group_size")
"""MemoryConfig fields that change how a training step computes the value gradient or lays the value table out over
ranks, not the model: the weights and the optimizer's state (AdamW's keys, for :class:`memory_layers.RowwiseAdamW`
too; checkpoints hold whole tables, see :mod:`memory_layers.values_parallel`) carry over when they change."""


T = TypeVar("T")


def from_dict_strict(cls: Type[T], data: Mapping[str, Any], noun: str = "keys") -> T:
    """``cls(**data)`` for a config dataclass, refusing keys that are not its fields with a ValueError that names
    them (and the known ones) instead of a TypeError: ``{cls}: unknown {noun} [...]; known {noun} are [...]``."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown {noun} {unknown}; known {noun} are {sorted(known)}")
    return cls(**dict(data))


def _fail(field_name: str, value: Any, why: str) -> None:
    raise ValueError(f"MemoryConfig.{field_name}={value!r}: {why}")


@dataclass(frozen=True)
class MemoryConfig:
    """Product-key memory hyperparameters (Lample et al. 2019; Berges et al. 2024).

    Attributes:
        layers: indices of the transformer blocks whose MLP gets a memory (0-based, unique).
        n_keys: sub-keys per half; the table holds ``n_keys ** 2`` value rows (slots).
        heads: read heads; each head has its own query projection slice and sub-key sets.
        knn: slots read per head (top-k of the product search); ``1 <= knn <= n_keys``.
        k_dim: query/key width per head; even, since it splits into two halves of ``k_dim // 2``.
        v_dim: value row width; ``-1`` means the block width (the layer's output width).
        share_values: one value table for every memory layer of a model, passed explicitly to each layer.
        value_lr: fixed learning rate of the value table (separate from the base lr, not scheduled).
        value_weight_decay: weight decay of the value table.
        sparse_value_grad: give the value table a sparse gradient of the rows a step reads instead of a dense
            (n_slots, v_dim) one, for large tables (a dense fp32 gradient of 2**20 x 1024 is 4 GiB each step); the
            optimizer must take sparse gradients (:class:`memory_layers.RowwiseAdamW`: AdamW on the rows read).
            Not with ``values_parallel_group_size > 1`` or the dense bag path.
        gated: multiply the read-out by ``sigmoid(gate(x))``, one scalar per token.
        swilu: gate the bag with ``silu(swilu_proj(x))`` before ``value_proj`` (on by default).
        query_batchnorm: batch-normalise the queries (statistics are wrong on padded batches).
        input_dropout: dropout on the layer input before the query projection.
        query_dropout: dropout on the queries.
        value_dropout: dropout on the read-out bag (tokens, v_dim).
        mode: ``"replace"`` swaps the block's MLP for the memory (the thesis); ``"parallel"`` keeps the MLP and
            adds the memory through a zero-initialised gate, so the student starts exactly at the teacher.
        gate_lr: fixed learning rate of the parallel mode's gate (not scheduled, no weight decay). Adam moves a
            parameter by about its lr per step, and the memory's own gradients are proportional to the gate, so at
            a fine-tuning lr (1e-5 in the thesis) a zero gate would stay shut for a whole run.
        values_parallel_group_size: split the value table by columns over groups of this many ranks (1 = off; the
            trainer shards only distributed runs, see :mod:`memory_layers.values_parallel`).
    """

    layers: Tuple[int, ...] = ()
    n_keys: int = 64
    heads: int = 4
    knn: int = 32
    k_dim: int = 256
    v_dim: int = -1
    share_values: bool = True
    value_lr: float = 1e-3
    value_weight_decay: float = 0.0
    sparse_value_grad: bool = False
    gated: bool = False
    swilu: bool = True
    query_batchnorm: bool = False
    input_dropout: float = 0.0
    query_dropout: float = 0.0
    value_dropout: float = 0.0
    mode: str = "replace"
    gate_lr: float = 1e-2
    values_parallel_group_size: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.layers, (str, bytes)) or not isinstance(self.layers, Sequence):
            _fail("layers", self.layers, "must be a list of block indices")
        layers = tuple(self.layers)
        object.__setattr__(self, "layers", layers)
        for index in layers:
            if isinstance(index, bool) or not isinstance(index, int):
                _fail("layers", list(layers), f"block index {index!r} is not an integer")
            if index < 0:
                _fail("layers", list(layers), f"block index {index} is negative")
        duplicates = sorted({i for i in layers if layers.count(i) > 1})
        if duplicates:
            _fail("layers", list(layers), f"block indices {duplicates} are repeated")
        for name in ("n_keys", "heads", "knn", "k_dim", "values_parallel_group_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                _fail(name, value, "must be a positive integer")
        if self.k_dim % 2:
            _fail("k_dim", self.k_dim, "must be even (queries split into two halves for the product keys)")
        if self.knn > self.n_keys:
            _fail("knn", self.knn, f"must satisfy 1 <= knn <= n_keys ({self.n_keys})")
        if isinstance(self.v_dim, bool) or not isinstance(self.v_dim, int) or (self.v_dim < 1 and self.v_dim != -1):
            _fail("v_dim", self.v_dim, "must be a positive integer, or -1 for the block width")
        for name in ("value_lr", "value_weight_decay", "gate_lr"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                _fail(name, value, "must be a finite number >= 0")
        for name in ("input_dropout", "query_dropout", "value_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
                _fail(name, value, "must be a probability in [0, 1)")
        for name in ("share_values", "sparse_value_grad", "gated", "swilu", "query_batchnorm"):
            if not isinstance(getattr(self, name), bool):
                _fail(name, getattr(self, name), "must be true or false")
        if self.mode not in MODES:
            _fail("mode", self.mode, f"must be one of {MODES}")
        if self.sparse_value_grad and self.values_parallel_group_size > 1:
            _fail("sparse_value_grad", True, "is not supported with values_parallel_group_size > 1 (a shard already "
                  "holds 1/g of the table; its gradient is all-reduced dense)")

    @property
    def n_slots(self) -> int:
        """Rows of the value table: ``n_keys ** 2``."""
        return self.n_keys * self.n_keys

    def value_dim(self, block_width: int) -> int:
        """The value row width for a block of width ``block_width`` (resolves ``v_dim == -1``)."""
        return block_width if self.v_dim == -1 else self.v_dim

    def check_layers(self, depth: int) -> None:
        """Raise ValueError unless every layer index lies inside a tower of ``depth`` blocks."""
        outside = [i for i in self.layers if i >= depth]
        if outside:
            _fail("layers", list(self.layers), f"block indices {outside} are outside the tower's depth {depth}")

    def replace(self, **changes: Any) -> "MemoryConfig":
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        data["layers"] = list(self.layers)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MemoryConfig":
        """Build from a JSON-like mapping; unknown keys raise ValueError naming them."""
        return from_dict_strict(cls, data)

    @staticmethod
    def parse_override(text: str) -> Tuple[str, Any]:
        """One ``KEY=VALUE`` override, as the programs' ``--memory`` flag takes it, -> (key, typed value).

        ``layers=2,3`` (block indices, comma-separated; ``layers=`` is none), ``gated=true``/``false``, an integer,
        a finite float, else the text (``mode=parallel``). The key is checked when the overrides are merged
        (:meth:`with_overrides`).

        Raises:
            ValueError: no ``=`` or no key, layers that are not integers, a number that is not finite (``nan``,
                ``inf``, ``1e999``); the message quotes ``text``.
        """
        key, sep, raw = text.partition("=")
        if not sep or not key:
            raise ValueError(f"{text!r}: expected KEY=VALUE, e.g. knn=32 or layers=2,3")
        if key == "layers":
            try:
                return key, tuple(int(v) for v in raw.split(",") if v.strip())
            except ValueError:
                raise ValueError(f"{text!r}: layers are block indices, e.g. layers=2,3") from None
        if raw.lower() in ("true", "false"):
            return key, raw.lower() == "true"
        for cast in (int, float):
            try:
                value = cast(raw)
            except ValueError:
                continue
            if not math.isfinite(value):
                raise ValueError(f"{text!r}: {key} must be a finite number")
            return key, value
        return key, raw

    @classmethod
    def with_overrides(cls, base: Optional["MemoryConfig"], overrides: Mapping[str, Any]) -> "MemoryConfig":
        """``base`` (the defaults when None) with some fields replaced, validated again.

        Raises:
            ValueError: an unknown field (naming the known ones) or a value the config refuses.
        """
        return cls.from_dict({**(base.to_dict() if base is not None else {}), **dict(overrides)})


__all__ = ["MemoryConfig", "MODES", "from_dict_strict"]
