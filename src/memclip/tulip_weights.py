"""TULIP's released text encoder (ivonajdenkoska/tulip, weights on the Hugging Face hub as mderakhshani/TULIP), read
in TULIP's own checkpoint format.

TULIP saves open_clip training checkpoints, ``{"epoch", "name", "state_dict", "optimizer"}``, the ``state_dict`` keys
prefixed ``module.`` under DDP. Its text tower's weights sit at the top level, as in open_clip's ``CLIP``:
``token_embedding.weight``, ``transformer.resblocks.N.{ln_1, attn.in_proj_weight, attn.in_proj_bias, attn.out_proj,
ln_2, mlp.c_fc, mlp.c_proj}.*``, ``ln_final.*`` and ``text_projection``. Its distillation stage saves the tower alone;
its context-extension stage saves the whole CLIP, with ``visual.*``, ``logit_scale`` and an unused
``positional_embedding`` beside the tower (TULIP's blocks take their positions from rotations only).

The tower is memclip's RoPE tower (:class:`memclip.rope_text.RopeTextTransformer`) up to three conventions:

- **Rotation pairs.** TULIP rotates adjacent dimensions ``(2i, 2i + 1)`` of each head (as complex numbers); memclip
  rotates ``(i, i + head_dim / 2)``, with the same frequency ``theta^(-2i / head_dim)`` for pair ``i``. Permuting the
  rows of each head's query and key projections (even dimensions first, then odd) turns one into the other and leaves
  every attention score unchanged.
- **Activation.** TULIP's text blocks use exact GELU (its ``TextTransformerRoPE`` default), also when the CLIP they
  started from (OpenAI's) used QuickGELU; the model records ``activation="gelu"`` in its text-tower config.
- **Base.** TULIP evaluates its released towers with theta 10000 and no NTK scaling (``eval_tulip.py``), at 248
  tokens.
"""
from __future__ import annotations

from typing import Dict, Mapping

import torch

from .errors import InputError

TULIP_PREFIX = "tulip:"
"""A ``text_pretrained`` value ``tulip:PATH`` names a checkpoint in TULIP's format."""
TULIP_CONTEXT_LENGTH = 248
"""The context TULIP's released towers read."""
TULIP_ACTIVATION = "gelu"
TEXT_KEY_PREFIXES = ("token_embedding.", "transformer.resblocks.", "ln_final.", "text_projection")


def interleaved_to_half_split(rows: torch.Tensor, heads: int) -> torch.Tensor:
    """Reorder the rows (heads * head_dim, ...) of a query or key projection from TULIP's pairs (2i, 2i + 1) to
    memclip's (i, i + head_dim / 2): within each head, even rows first, then odd rows."""
    head_dim = rows.shape[0] // heads
    if head_dim * heads != rows.shape[0] or head_dim % 2:
        raise InputError(f"{rows.shape[0]} rows do not split into {heads} heads of an even width")
    order = torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])
    index = (torch.arange(heads)[:, None] * head_dim + order[None, :]).reshape(-1)
    return rows[index]


def tulip_text_state_dict(state_dict: Mapping[str, torch.Tensor], heads: int) -> Dict[str, torch.Tensor]:
    """The weights of memclip's RoPE tower (keys of ``model.text``) from a TULIP checkpoint's ``state_dict``
    (``module.`` prefixes already removed): the text keys only, each block's query and key rows reordered.

    Raises:
        KeyError: the state dict has no TULIP text tower (no ``token_embedding.weight`` or no blocks).
    """
    text = {k: v for k, v in state_dict.items() if k.startswith(TEXT_KEY_PREFIXES)}
    if "token_embedding.weight" not in text or not any(k.startswith("transformer.resblocks.") for k in text):
        raise KeyError("no TULIP text tower (token_embedding.weight and transformer.resblocks.*) in the checkpoint")
    converted = dict(text)
    for key, value in text.items():
        if key.endswith(("attn.in_proj_weight", "attn.in_proj_bias")):
            width = value.shape[0] // 3
            q, k, v = value[:width], value[width:2 * width], value[2 * width:]
            converted[key] = torch.cat([interleaved_to_half_split(q, heads), interleaved_to_half_split(k, heads), v])
    return converted
