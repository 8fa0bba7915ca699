"""Longer text contexts for CLIP towers with absolute positions (Long-CLIP's knowledge-preserved stretching)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InputError


def longclip_stretch(positions: torch.Tensor, new_length: int, keep: int = 20) -> torch.Tensor:
    """Stretch a positional embedding (L, D) to (new_length, D), as Long-CLIP does.

    Positions ``0..keep-1`` are kept bit-identical. New position ``p >= keep`` reads source coordinate
    ``s = keep + (p - keep) / r`` with ``r = (new_length - keep) / (L - keep)``: inside ``[keep, L - 1]`` it is the
    linear interpolation of the two neighbouring rows; past ``L - 1`` it is extrapolated along the last difference.
    For L = 77, keep = 20 and new_length = 248 (r = 4) this is exactly Long-CLIP's table: each gap from 20 to 76 is
    split in four, and the last four slots are extrapolated.
    """
    length, width = positions.shape
    if not keep < length:
        raise InputError(f"keep={keep} must be smaller than the embedding's length {length}")
    if new_length < length:
        raise InputError(f"new_length={new_length} is shorter than the embedding's length {length}")
    source = positions.detach().to(torch.float64)
    ratio = (new_length - keep) / (length - keep)
    coordinate = keep + (torch.arange(keep, new_length, dtype=torch.float64) - keep) / ratio
    lower = coordinate.floor().long().clamp(max=length - 1)
    fraction = (coordinate - lower.double()).unsqueeze(-1)
    upper = (lower + 1).clamp(max=length - 1)
    inside = source[lower] + fraction * (source[upper] - source[lower])
    beyond = source[length - 1] + (coordinate.unsqueeze(-1) - (length - 1)) * (source[length - 1] - source[length - 2])
    stretched = torch.where((coordinate > length - 1).unsqueeze(-1), beyond, inside)
    out = torch.cat([source[:keep], stretched]).to(positions.dtype)
    out[:keep] = positions.detach()[:keep]
    return out


def interpolate_stretch(positions: torch.Tensor, new_length: int) -> torch.Tensor:
    """Plain linear resize of all positions (open_clip's resize), for comparison with the Long-CLIP stretch."""
    resized = F.interpolate(positions.detach().T.unsqueeze(0).float(), size=new_length, mode="linear",
                            align_corners=True)
    return resized.squeeze(0).T.to(positions.dtype)


def causal_mask(length: int) -> torch.Tensor:
    """Additive causal mask (length, length): 0 on and below the diagonal, -inf above."""
    return torch.full((length, length), float("-inf")).triu_(1)


def _text_holder(model: nn.Module) -> nn.Module:
    """The module that owns the text tower's positional embedding (CLIP itself, or CustomTextCLIP.text)."""
    text = getattr(model, "text", None)
    holder = text if text is not None and hasattr(text, "positional_embedding") else model
    if not isinstance(getattr(holder, "positional_embedding", None), nn.Parameter):
        raise TypeError(
            f"{type(model).__name__} has no absolute text positional embedding to stretch "
            "(HF text towers and RoPE towers are not stretched)"
        )
    return holder


def stretch_text_positions(model: nn.Module, new_length: int, method: str = "longclip", keep: int = 20) -> None:
    """Give an open_clip CLIP/CustomTextCLIP model a text context of ``new_length`` tokens, in place.

    Replaces the positional embedding with its stretch, rebuilds the causal mask and updates ``context_length``,
    so the model reads ``new_length``-token inputs (tokenizers must follow: ``get_tokenizer(..., context_length=N)``).
    """
    holder = _text_holder(model)
    old = holder.positional_embedding
    if new_length == old.shape[0]:
        return
    if method == "longclip":
        new = longclip_stretch(old.data, new_length, keep=keep)
    elif method == "interpolate":
        new = interpolate_stretch(old.data, new_length)
    else:
        raise InputError(f"unknown stretch method {method!r}: use 'longclip' or 'interpolate'")
    holder.positional_embedding = nn.Parameter(new, requires_grad=old.requires_grad)
    for owner in {id(holder): holder, id(model): model}.values():
        if getattr(owner, "attn_mask", None) is not None:
            owner.register_buffer("attn_mask", causal_mask(new_length).to(old.device), persistent=False)
        if hasattr(owner, "context_length"):
            owner.context_length = new_length
        if hasattr(owner, "num_pos"):
            owner.num_pos = new_length
