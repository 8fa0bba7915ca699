"""A TULIP-style text tower: CLIP's text transformer with rotary positions (RoPE) in every block.

The tower reuses the CLIP text tower's modules (token embedding, blocks, final norm, projection) and drops the
absolute positional embedding, so it starts from the CLIP weights and its state-dict keys match open_clip's
``text.*`` layout minus ``text.positional_embedding``. Distil it against the frozen CLIP tower on <= 77-token
captions, then extend the context with NTK-aware scaling (``rope_ntk_factor``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, ResidualAttentionBlock, text_global_pool
from torch import nn
from torch.utils.checkpoint import checkpoint

from .errors import InputError


ACTIVATION_MODULES = {"gelu": nn.GELU, "quick_gelu": QuickGELU}


def rope_base(theta: float, ntk_factor: float, head_dim: int) -> float:
    """NTK-aware base: theta * factor^(d / (d - 2)) (factor 1 leaves theta unchanged)."""
    return theta * ntk_factor ** (head_dim / (head_dim - 2))


def rope_tables(
    length: int, head_dim: int, base: float, device: torch.device, dtype: torch.dtype
) -> Tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (length, head_dim) for rotating pairs (i, i + head_dim / 2)."""
    inverse = 1.0 / base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float64), inverse)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, H, L, head_dim) by position: x * cos + rotate_half(x) * sin, tables (L, head_dim)."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


class RopeTextTransformer(nn.Module):
    """Drop-in replacement for open_clip's ``TextTransformer`` (``CustomTextCLIP.text``) with rotary positions.

    Args:
        text: the open_clip TextTransformer whose modules are reused (its positional embedding is dropped).
        context_length: tokens the tokenizer produces for this tower.
        theta: RoPE base before NTK scaling.
        ntk_factor: NTK-aware context-extension factor (1 = none).
        activation: ``gelu`` or ``quick_gelu`` replaces the blocks' MLP activation (TULIP's towers use GELU); None
            keeps the text tower's.
    Input: token ids (B, L), L <= any length (positions are relative); output: (B, output_dim) pooled features.
    """

    def __init__(self, text: nn.Module, context_length: int, theta: float = 10000.0, ntk_factor: float = 1.0,
                 activation: Optional[str] = None):
        super().__init__()
        if getattr(text, "cls_emb", None) is not None:
            raise TypeError("RoPE text towers support CLIP-style towers without a class token")
        blocks = text.transformer.resblocks
        if not all(isinstance(b, ResidualAttentionBlock) and isinstance(b.attn, nn.MultiheadAttention) for b in blocks):
            raise TypeError("RoPE text towers need open_clip ResidualAttentionBlocks with nn.MultiheadAttention")
        self.token_embedding = text.token_embedding
        self.transformer = text.transformer
        self.ln_final = text.ln_final
        self.text_projection = text.text_projection
        self.pool_type = text.pool_type
        self.eos_id = getattr(text, "eos_id", None)
        self.causal = text.attn_mask is not None
        self.width = text.width
        self.heads = text.heads
        self.head_dim = text.width // text.heads
        if self.head_dim % 2:
            raise InputError(f"RoPE needs an even head width, got {self.head_dim}")
        self.vocab_size = text.vocab_size
        self.output_dim = getattr(text, "output_dim", None)
        self.context_length = self.num_pos = context_length
        self.theta = theta
        self.ntk_factor = ntk_factor
        self.output_tokens = False
        self._tables: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
        self.activation = activation
        if activation is not None:
            for block in blocks:
                block.mlp.gelu = ACTIVATION_MODULES[activation]()

    @property
    def base(self) -> float:
        return rope_base(self.theta, self.ntk_factor, self.head_dim)

    def set_ntk_factor(self, factor: float, context_length: Optional[int] = None) -> None:
        """Extend the context: a new NTK factor (and tokenizer context length)."""
        self.ntk_factor = factor
        if context_length is not None:
            self.context_length = self.num_pos = context_length
        self._tables = None

    def _rope(self, length: int, like: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        tables = self._tables
        if tables is None or tables[0].shape[0] < length or tables[0].device != like.device:
            tables = rope_tables(max(length, self.context_length), self.head_dim, self.base, like.device, torch.float32)
            self._tables = tables
        return tables[0][:length].to(like.dtype), tables[1][:length].to(like.dtype)

    def _block(self, block: ResidualAttentionBlock, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        attn = block.attn
        qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = qkv.view(batch, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        cos, sin = self._rope(length, q)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        out = attn.out_proj(out.transpose(1, 2).reshape(batch, length, width))
        x = x + block.ls_1(out)
        return x + block.ls_2(block.mlp(block.ln_2(x)))

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        """text (B, L) int64 -> (B, output_dim)."""
        x = self.token_embedding(text).to(self.transformer.get_cast_dtype())
        for block in self.transformer.resblocks:
            if self.transformer.grad_checkpointing and self.training and not torch.jit.is_scripting():
                x = checkpoint(self._block, block, x, use_reentrant=False)
            else:
                x = self._block(block, x)
        x = self.ln_final(x)
        pooled = text_global_pool(x, text, self.pool_type, eos_token_id=self.eos_id)
        if self.text_projection is None:
            return pooled
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(pooled)
        return pooled @ self.text_projection

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.transformer.grad_checkpointing = enable

    def lock(self, unlocked_layers: int = 0, freeze_layer_norm: bool = True) -> None:
        """Freeze the tower, leaving the last ``unlocked_layers`` blocks (and final norm/projection) trainable."""
        for param in self.parameters():
            param.requires_grad_(False)
        if unlocked_layers:
            for block in self.transformer.resblocks[-unlocked_layers:]:
                for param in block.parameters():
                    param.requires_grad_(True)
            for module in (self.ln_final,):
                for param in module.parameters():
                    param.requires_grad_(not freeze_layer_norm)
            if isinstance(self.text_projection, nn.Parameter):
                self.text_projection.requires_grad_(True)

    def extra_repr(self) -> str:
        activation = f", activation={self.activation}" if self.activation else ""
        return (f"rope theta={self.theta:g}, ntk_factor={self.ntk_factor:g}, context_length={self.context_length}"
                f"{activation}")


def convert_to_rope_text(model: nn.Module, context_length: int, theta: float = 10000.0,
                         ntk_factor: float = 1.0, activation: Optional[str] = None) -> RopeTextTransformer:
    """Replace ``model.text`` (a CustomTextCLIP's TextTransformer) with a RoPE tower built from its modules."""
    text = getattr(model, "text", None)
    if text is None or not hasattr(text, "transformer"):
        raise TypeError(
            f"{type(model).__name__} has no separate text tower; build it with custom_text=True (memclip's factory "
            "does this for text_tower kind 'rope')"
        )
    if isinstance(text, RopeTextTransformer):
        if activation != text.activation:
            raise InputError(f"cannot change a RoPE tower's activation from {text.activation} to {activation} after "
                             "training")
        text.set_ntk_factor(ntk_factor, context_length)
        return text
    rope = RopeTextTransformer(text, context_length, theta=theta, ntk_factor=ntk_factor, activation=activation)
    model.text = rope
    return rope
