"""`CLIP`: open_clip's CLIP, whose text encoder skips the padding after the longest caption of a batch.

CLIP's text tower is causal: a token attends only to itself and the tokens before it, and the caption's feature is
read at its end-of-text token. The padding after the longest caption of a batch therefore changes nothing, yet
open_clip always runs all ``context_length`` positions (77, or 248 after a Long-CLIP stretch). Short captions are
10-20 tokens, so the text tower does 4-7x the work it needs. This subclass runs only the used positions; the result
is the same to float rounding (a test checks features and gradients). memclip's factory builds every model with a
CLIP text tower from it; anything that expects ``open_clip.CLIP`` accepts it.
"""
from __future__ import annotations

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool

from .names_text import NAME_TABLE, encode_names

# Pooling that reads a position at or before the end-of-text token, so trailing padding cannot change it.
_POOLS_BEFORE_PADDING = ("argmax", "eos", "first")


def used_length(text: torch.Tensor) -> int:
    """1 + the last position holding a non-pad token in any row of ``text`` (B, L) (pad id 0); at least 1."""
    used = (text != 0).any(dim=0).nonzero()
    return int(used[-1]) + 1 if used.numel() else 1


class CLIP(open_clip.CLIP):
    """open_clip's CLIP with :meth:`encode_text` trimmed to the used positions (see the module docstring)."""

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """text (B, L) token ids -> features (B, embed_dim), as ``open_clip.CLIP.encode_text``; with a fixed name
        table (:mod:`memclip.names_text`) text is (B, 1) name indices and the features are their table rows."""
        table = getattr(self, NAME_TABLE, None)
        if table is not None:
            features = encode_names(table, text)
            return F.normalize(features, dim=-1) if normalize else features
        length = used_length(text)
        if length == text.shape[1] or self.attn_mask is None or self.text_pool_type not in _POOLS_BEFORE_PADDING:
            return super().encode_text(text, normalize)
        text = text[:, :length]
        cast_dtype = self.transformer.get_cast_dtype()
        x = self.token_embedding(text).to(cast_dtype) + self.positional_embedding[:length].to(cast_dtype)
        x = self.transformer(x, attn_mask=self.attn_mask[:length, :length])
        x = self.ln_final(x)
        x = text_global_pool(x, text, self.text_pool_type, eos_token_id=getattr(self, "text_eos_id", None))
        if self.text_projection is not None:
            x = self.text_projection(x) if isinstance(self.text_projection, torch.nn.Linear) \
                else x @ self.text_projection
        return F.normalize(x, dim=-1) if normalize else x
