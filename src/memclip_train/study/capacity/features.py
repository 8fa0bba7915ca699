"""`SlotProbe`: the frozen teacher around one MLP slot, and the cached features the slot probe trains on.

The probe trains only the slot of the teacher's last block: the image embedding is
``proj(ln_post(h + ls_2(slot(ln_2(h)))))``, where ``h`` is the class token entering that block's ``ln_2`` (the block
input plus its attention). In the last block of a class-token ViT nothing after the slot mixes tokens, so ``h`` alone
determines the embedding and can be cached once per render; :meth:`SlotProbe.rebuild_error` checks that the rebuild
with the teacher's own MLP equals ``encode_image``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import torch
from PIL import Image
from torch import nn

from memclip.atomic_io import atomic_write
from memclip.errors import InputError

from ...synth.render import RenderConfig, render_scene
from ...synth.world import Scene, WorldConfig

LOG = logging.getLogger(__name__)


class SlotProbe(nn.Module):
    """The frozen teacher's image tower around the MLP slot of its last block.

    Args:
        model: a CLIP whose image tower is an open_clip ``VisionTransformer`` pooled by its class token.
        preprocess: the model's evaluation image transform (PIL image -> (3, H, W) tensor).

    Raises:
        ValueError: the tower pools otherwise than by its class token (then the class token alone does not
            determine the embedding).
    """

    def __init__(self, model: nn.Module, preprocess: Callable[[Image.Image], torch.Tensor]) -> None:
        super().__init__()
        visual = model.visual
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
            raise InputError("the slot probe needs an image tower pooled by its class token (pool_type 'tok', no "
                             f"attention pooling); got pool_type {getattr(visual, 'pool_type', None)!r}")
        self.model = model.eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.preprocess = preprocess
        self.block = visual.transformer.resblocks[-1]
        self.block_index = len(visual.transformer.resblocks) - 1
        self.width = self.block.ln_2.normalized_shape[0]
        self.embed_dim = visual.proj.shape[1] if visual.proj is not None else self.width

    @property
    def teacher_mlp(self) -> nn.Module:
        """The MLP in the slot (the teacher's own)."""
        return self.block.mlp

    def images(self, scenes: Sequence[Scene], world: WorldConfig, render: RenderConfig) -> torch.Tensor:
        """(N, 3, H, W) model inputs of ``scenes``: rendered, then the model's evaluation transform (as a user's
        images would be)."""
        return torch.stack([self.preprocess(Image.fromarray(render_scene(scene, world, render).image))
                            for scene in scenes])

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images -> (N, width) class tokens entering the last block's ``ln_2``."""
        captured: List[torch.Tensor] = []

        def keep_class_token(module: nn.Module, inputs) -> None:
            tokens = inputs[0]
            batch_first = getattr(self.model.visual.transformer, "batch_first", True)
            captured.append((tokens[:, 0] if batch_first else tokens[0]).clone())

        handle = self.block.ln_2.register_forward_pre_hook(keep_class_token)
        try:
            self.model.visual(images)
        finally:
            handle.remove()
        return captured[0]

    def embed(self, h: torch.Tensor, slot: Optional[nn.Module] = None) -> torch.Tensor:
        """(N, width) cached features -> (N, embed_dim) image embeddings (not normalised), the slot in place of the
        teacher's MLP (None: the teacher's MLP)."""
        slot = self.teacher_mlp if slot is None else slot
        visual = self.model.visual
        x = h + self.block.ls_2(slot(self.block.ln_2(h)))
        x = visual.ln_post(x)
        return x @ visual.proj if visual.proj is not None else x

    @torch.no_grad()
    def rebuild_error(self, images: torch.Tensor) -> float:
        """Largest absolute difference between ``encode_image(images)`` and the embedding rebuilt from the cached
        features with the teacher's own MLP (0 up to float rounding when the cache is right)."""
        direct = self.model.encode_image(images)
        rebuilt = self.embed(self.features(images))
        return float((direct - rebuilt).abs().max())


def cache_features(probe: SlotProbe, scenes: Sequence[Scene], world: WorldConfig, render: RenderConfig,
                   folder: Path, chunk: int = 8192, batch_size: int = 256,
                   progress: Optional[Callable[[int], None]] = None) -> torch.Tensor:
    """(len(scenes), width) features of every scene, cached in ``folder`` in chunks of ``chunk`` scenes: a chunk
    written earlier is read back, so an interrupted cache resumes where it stopped. ``progress`` gets the number of
    scenes done after each batch."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for start in range(0, len(scenes), chunk):
        path = folder / f"{start // chunk:05d}.pt"
        size = min(chunk, len(scenes) - start)
        if path.is_file():
            part = torch.load(path, weights_only=True)
            if part.shape[0] == size:
                parts.append(part)
                if progress:
                    progress(start + size)
                continue
        rows = []
        for first in range(start, start + size, batch_size):
            batch = scenes[first:min(first + batch_size, start + size)]
            rows.append(probe.features(probe.images(batch, world, render)))
            if progress:
                progress(first + len(batch))
        part = torch.cat(rows)
        atomic_write(path, lambda tmp, part=part: torch.save(part, tmp))
        parts.append(part)
    return torch.cat(parts) if parts else torch.zeros(0, probe.width)
