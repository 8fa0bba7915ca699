"""Optimizer parameter groups for models that hold product-key memories."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from torch import nn

from .values import ValueTable

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _no_decay_ids(model: nn.Module) -> set:
    """Ids of norm parameters (any shape); biases and 1-D parameters are caught by shape and name."""
    ids = set()
    for module in model.modules():
        if isinstance(module, NORM_TYPES) or type(module).__name__.endswith("Norm"):
            ids.update(id(p) for p in module.parameters(recurse=False))
    return ids


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    value_lr: Optional[float] = None,
    value_weight_decay: Optional[float] = None,
) -> List[Dict[str, Any]]:
    """Split the trainable parameters of ``model`` into optimizer groups.

    Groups (empty ones are left out), each with a ``name`` key:
        - ``values``: every :class:`ValueTable`'s weight, at the table's fixed lr and weight decay (or the
          overrides). ``fixed_lr=True`` tells schedulers to leave it alone.
        - ``decay``: matrices, at ``lr`` and ``weight_decay``.
        - ``no_decay``: norms, biases and parameters with fewer than 2 dimensions, at ``lr`` without decay.

    Frozen parameters (``requires_grad=False``) are skipped; a parameter shared by several modules appears once.
    """
    no_decay_ids = _no_decay_ids(model)
    seen: set = set()
    values: List[nn.Parameter] = []
    table_lrs, table_wds = set(), set()
    for module in model.modules():
        if isinstance(module, ValueTable) and module.weight.requires_grad and id(module.weight) not in seen:
            seen.add(id(module.weight))
            values.append(module.weight)
            table_lrs.add(module.lr)
            table_wds.add(module.weight_decay)
    if value_lr is None and len(table_lrs) > 1:
        raise ValueError(f"value tables disagree on their lr {sorted(table_lrs)}; pass value_lr explicitly")
    if value_weight_decay is None and len(table_wds) > 1:
        raise ValueError(f"value tables disagree on weight decay {sorted(table_wds)}; pass value_weight_decay")

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        if param.ndim < 2 or name.endswith(".bias") or id(param) in no_decay_ids:
            no_decay.append(param)
        else:
            decay.append(param)

    groups: List[Dict[str, Any]] = []
    if values:
        groups.append({
            "name": "values",
            "params": values,
            "lr": value_lr if value_lr is not None else table_lrs.pop(),
            "weight_decay": value_weight_decay if value_weight_decay is not None else table_wds.pop(),
            "fixed_lr": True,
        })
    if decay:
        groups.append({"name": "decay", "params": decay, "lr": lr, "weight_decay": weight_decay, "fixed_lr": False})
    if no_decay:
        groups.append({"name": "no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0, "fixed_lr": False})
    return groups
