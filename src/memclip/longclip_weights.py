"""Long-CLIP's released checkpoints (longclip-B.pt, longclip-L.pt) as open_clip weights.

Long-CLIP keeps two (248, width) text position tables, ``positional_embedding`` and ``positional_embedding_res``,
and adds ``positional_embedding * mask1 + positional_embedding_res * mask2`` to the token embeddings, where the fixed
masks select rows 0-19 (mask1) and rows 20-247 (mask2). Its effective table is therefore the first 20 rows of the
one and the other 228 rows of the other: that single 248-row table is what an open_clip CLIP with a 248-token context
reads. Everything else is OpenAI CLIP's layout, which open_clip's CLIP shares.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from .errors import InputError

LONGCLIP_RESIDUAL_KEY = "positional_embedding_res"
LONGCLIP_KEPT_POSITIONS = 20
"""Rows taken from ``positional_embedding`` (Long-CLIP's mask1); the rest come from ``positional_embedding_res``."""


def is_longclip_state_dict(state_dict: Dict[str, torch.Tensor]) -> bool:
    """True for a state dict in Long-CLIP's layout (it has the residual position table)."""
    return LONGCLIP_RESIDUAL_KEY in state_dict and "positional_embedding" in state_dict


def longclip_positions(table: torch.Tensor, residual: torch.Tensor,
                       kept: int = LONGCLIP_KEPT_POSITIONS) -> torch.Tensor:
    """The effective (L, width) position table: rows ``< kept`` of ``table``, the others of ``residual``."""
    if table.shape != residual.shape:
        raise InputError(f"Long-CLIP position tables differ in shape: {tuple(table.shape)} and "
                         f"{tuple(residual.shape)}")
    if not kept < table.shape[0]:
        raise InputError(f"a Long-CLIP table of {table.shape[0]} rows cannot keep {kept}")
    return torch.cat([table[:kept], residual[kept:]])


def from_longclip_state_dict(state_dict: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], int]:
    """open_clip CLIP weights from a Long-CLIP state dict, and the text context length they need (248).

    Returns:
        (a new state dict with one ``positional_embedding`` and no ``positional_embedding_res``, context length).
    """
    converted = {k: v for k, v in state_dict.items() if k != LONGCLIP_RESIDUAL_KEY}
    converted["positional_embedding"] = longclip_positions(state_dict["positional_embedding"],
                                                           state_dict[LONGCLIP_RESIDUAL_KEY])
    return converted, converted["positional_embedding"].shape[0]
