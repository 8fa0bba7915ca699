"""Optimizer parameter groups for models that hold product-key memories."""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple

from torch import nn

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _no_decay_ids(model: nn.Module) -> set:
    """Ids of norm parameters (any shape); biases and 1-D parameters are caught by shape and name."""
    ids = set()
    for module in model.modules():
        if isinstance(module, NORM_TYPES) or type(module).__name__.endswith("Norm"):
            ids.update(id(p) for p in module.parameters(recurse=False))
    return ids


def _fixed_lr_entries(model: nn.Module) -> Iterator[Tuple[str, nn.Parameter, float, float]]:
    """(group name, parameter, lr, weight decay) of every module that declares ``fixed_lr_parameters()``."""
    for module in model.modules():
        declare = getattr(module, "fixed_lr_parameters", None)
        if callable(declare):
            yield from declare()


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    value_lr: Optional[float] = None,
    value_weight_decay: Optional[float] = None,
) -> List[Dict[str, Any]]:
    """Split the trainable parameters of ``model`` into optimizer groups.

    Groups (empty ones are left out), each with a ``name`` key:
        - one group per name that modules declare through ``fixed_lr_parameters()``, each at its fixed lr and
          weight decay, with ``fixed_lr=True`` so that schedulers leave it alone: ``values`` (every
          :class:`ValueTable`'s weight; ``value_lr``/``value_weight_decay`` override them) and, for example,
          memclip's ``gates`` (the zero-initialised gates of parallel memories);
        - ``decay``: matrices, at ``lr`` and ``weight_decay``;
        - ``no_decay``: norms, biases and parameters with fewer than 2 dimensions, at ``lr`` without decay.

    Frozen parameters (``requires_grad=False``) are skipped; a parameter shared by several modules appears once.

    Raises:
        ValueError: modules disagree on the lr or weight decay of one fixed group (for values, unless overridden).
    """
    no_decay_ids = _no_decay_ids(model)
    seen: set = set()
    fixed: Dict[str, Dict[str, Any]] = {}
    for name, param, group_lr, group_wd in _fixed_lr_entries(model):
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        entry = fixed.setdefault(name, {"params": [], "lrs": set(), "wds": set()})
        entry["params"].append(param)
        entry["lrs"].add(group_lr)
        entry["wds"].add(group_wd)
    overrides = {"values": (value_lr, value_weight_decay)}

    groups: List[Dict[str, Any]] = []
    for name, entry in fixed.items():
        lr_override, wd_override = overrides.get(name, (None, None))
        if lr_override is None and len(entry["lrs"]) > 1:
            hint = "; pass value_lr explicitly" if name == "values" else ""
            raise ValueError(f"{name} parameters disagree on their lr {sorted(entry['lrs'])}{hint}")
        if wd_override is None and len(entry["wds"]) > 1:
            hint = "; pass value_weight_decay" if name == "values" else ""
            raise ValueError(f"{name} parameters disagree on weight decay {sorted(entry['wds'])}{hint}")
        groups.append({
            "name": name,
            "params": entry["params"],
            "lr": lr_override if lr_override is not None else entry["lrs"].pop(),
            "weight_decay": wd_override if wd_override is not None else entry["wds"].pop(),
            "fixed_lr": True,
        })

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        if param.ndim < 2 or name.endswith(".bias") or id(param) in no_decay_ids:
            no_decay.append(param)
        else:
            decay.append(param)
    if decay:
        groups.append({"name": "decay", "params": decay, "lr": lr, "weight_decay": weight_decay, "fixed_lr": False})
    if no_decay:
        groups.append({"name": "no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0, "fixed_lr": False})
    return groups
