"""Optimizer parameter groups for models that hold product-key memories, and AdamW for sparse value gradients."""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
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


class RowwiseAdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` that also takes sparse gradients, updating only the rows they hold (lazy AdamW).

    Dense gradients get torch's AdamW step unchanged. A parameter with a sparse COO gradient (a value table with
    ``sparse_value_grad``, see :class:`memory_layers.ValueTable`) updates only the rows read this step: their
    moments, their decoupled weight decay and their values; rows not read keep all three (the semantics of
    ``torch.optim.SparseAdam``, with AdamW's weight decay). Bias correction uses the parameter's step count. The
    state has AdamW's keys and shapes (``step``, ``exp_avg``, ``exp_avg_sq``), so a checkpoint moves between this
    optimizer and AdamW, and between sparse and dense tables.

    Args: those of ``torch.optim.AdamW``; ``amsgrad``, ``maximize``, ``capturable`` and ``differentiable`` apply
    to dense gradients only (a sparse gradient with them set raises ValueError).
    """

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        sparse = [(group, p) for group in self.param_groups for p in group["params"]
                  if p.grad is not None and p.grad.is_sparse]
        hidden = [(p, p.grad) for _, p in sparse]
        for p, _ in hidden:
            p.grad = None
        try:
            super().step()
        finally:
            for p, grad in hidden:
                p.grad = grad
        for group, p in sparse:
            self._sparse_step(group, p)
        return loss

    def _sparse_step(self, group: Dict[str, Any], param: torch.Tensor) -> None:
        for flag in ("amsgrad", "maximize", "capturable", "differentiable"):
            if group.get(flag):
                raise ValueError(f"RowwiseAdamW: {flag}=True is not supported for sparse gradients")
        grad = param.grad.coalesce()
        rows, values = grad.indices()[0], grad.values()
        state = self.state[param]
        if not state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["step"] += 1
        step = float(state["step"])
        beta1, beta2 = group["betas"]
        lr, eps = group["lr"], group["eps"]
        exp_avg = state["exp_avg"][rows].lerp_(values, 1 - beta1)
        exp_avg_sq = state["exp_avg_sq"][rows].mul_(beta2).addcmul_(values, values, value=1 - beta2)
        state["exp_avg"][rows] = exp_avg
        state["exp_avg_sq"][rows] = exp_avg_sq
        bias1, bias2 = 1 - beta1 ** step, 1 - beta2 ** step
        denominator = (exp_avg_sq.sqrt() / math.sqrt(bias2)).add_(eps)
        updated = param[rows].mul_(1 - lr * group["weight_decay"]).addcdiv_(exp_avg, denominator, value=-lr / bias1)
        param[rows] = updated
