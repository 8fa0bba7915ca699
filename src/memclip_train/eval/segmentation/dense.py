"""Dense patch features from an open_clip ViT, with the last block modified for zero-shot segmentation.

Methods (the last block only; memory blocks take part like any other block):
    vanilla   the unmodified block;
    sclip     correlative self-attention softmax(q q^T) + softmax(k k^T), residuals and MLP kept (SCLIP);
    clearclip q-q attention only: no residual, no MLP (ClearCLIP);
    maskclip  the value path out_proj(v): no attention, no residual, no MLP (MaskCLIP).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from memclip.errors import InputError

METHODS = ("sclip", "clearclip", "maskclip", "vanilla")


def _check(visual: nn.Module) -> None:
    needed = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post", "proj")
    missing = [n for n in needed if not hasattr(visual, n)]
    if missing or getattr(visual, "attn_pool", None) is not None:
        raise TypeError(f"dense features need a CLIP-style open_clip VisionTransformer (token pooling); "
                        f"{type(visual).__name__} lacks {missing or 'token pooling'}")


def _positions(visual: nn.Module, grid: tuple) -> torch.Tensor:
    """The positional embedding (1 + gh * gw, width), bicubically resized when the grid differs."""
    pos = visual.positional_embedding
    old = visual.grid_size
    if tuple(grid) == tuple(old):
        return pos
    cls, patches = pos[:1], pos[1:]
    patches = patches.reshape(1, old[0], old[1], -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches.float(), size=grid, mode="bicubic", align_corners=False).to(pos.dtype)
    return torch.cat([cls, patches.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)])


def _attention(block: nn.Module, x: torch.Tensor, method: str) -> torch.Tensor:
    attn = block.attn
    batch, length, width = x.shape
    heads = attn.num_heads
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    if method == "maskclip":
        return attn.out_proj(v)
    shape = (batch, length, heads, width // heads)
    q, k, v = (t.reshape(shape).transpose(1, 2) for t in (q, k, v))
    scale = (width // heads) ** -0.5
    if method == "sclip":
        weights = (q @ q.transpose(-2, -1) * scale).softmax(-1) + (k @ k.transpose(-2, -1) * scale).softmax(-1)
    else:
        weights = (q @ q.transpose(-2, -1) * scale).softmax(-1)
    return attn.out_proj((weights @ v).transpose(1, 2).reshape(batch, length, width))


@torch.no_grad()
def dense_features(visual: nn.Module, images: torch.Tensor, method: str = "sclip") -> torch.Tensor:
    """images (B, 3, H, W) -> L2-normalised patch features (B, H // patch, W // patch, embed_dim)."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose from {METHODS}")
    _check(visual)
    x = visual.conv1(images.to(visual.conv1.weight.dtype))
    grid = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + _positions(visual, tuple(grid)).to(x.dtype)
    x = visual.ln_pre(x)
    blocks = visual.transformer.resblocks
    for block in blocks[:-1]:
        x = block(x)
    last = blocks[-1]
    if method == "vanilla":
        x = last(x)
    elif method == "sclip":
        x = x + last.ls_1(_attention(last, last.ln_1(x), method))
        x = x + last.ls_2(last.mlp(last.ln_2(x)))
    else:
        x = _attention(last, last.ln_1(x), method)
    x = visual.ln_post(x) @ visual.proj
    patches = x[:, 1:].reshape(x.shape[0], grid[0], grid[1], -1)
    return F.normalize(patches.float(), dim=-1)

