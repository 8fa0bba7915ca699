"""`VisionStemConfig` and `ConvStem`: a convolutional stem in place of a ViT's patchify convolution.

A patchify stem (one stride-p convolution) sees each p x p patch through a single linear map; tiny towers trained
on a CPU budget learn colour that way but stay nearly blind to shape. A few stride-2 3x3 convolutions before the
transformer ("Early convolutions help transformers see better", Xiao et al. 2021) fix that at a small cost. The stem
replaces ``visual.conv1`` and keeps its contract, images (B, 3, H, W) -> tokens (B, width, H / p, W / p), so the
transformer, memory surgery and dense (per-patch) features are unchanged.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Tuple

from torch import Tensor, nn

from memory_layers.config import from_dict_strict

from .errors import InputError

STEM_KINDS = ("patch", "conv")
NORMS = ("group", "none")


@dataclass(frozen=True)
class VisionStemConfig:
    """How images become patch tokens (validated when built).

    Attributes:
        kind: ``patch`` (open_clip's patchify convolution, the default) or ``conv`` (stride-2 3x3 convolutions).
        channels: output channels of each stride-2 convolution of a ``conv`` stem; their number n must satisfy
            2**n == patch size, so the token grid stays the same. A final 1x1 convolution maps to the width.
        norm: ``group`` (GroupNorm after each convolution, batch-independent: safe while parts of the model are
            frozen) or ``none``.
    """

    kind: str = "patch"
    channels: Tuple[int, ...] = ()
    norm: str = "group"

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if self.kind not in STEM_KINDS:
            raise InputError(f"VisionStemConfig.kind={self.kind!r}: must be one of {STEM_KINDS}")
        if self.norm not in NORMS:
            raise InputError(f"VisionStemConfig.norm={self.norm!r}: must be one of {NORMS}")
        if self.kind == "conv" and not self.channels:
            raise InputError("VisionStemConfig.channels: a conv stem needs at least one convolution")
        if self.kind == "patch" and self.channels:
            raise InputError("VisionStemConfig.channels: only a conv stem has channels")
        if any(c < 1 for c in self.channels):
            raise InputError(f"VisionStemConfig.channels={list(self.channels)}: must be positive")
        if self.norm == "group" and any(c % _groups(c) for c in self.channels):
            raise InputError(f"VisionStemConfig.channels={list(self.channels)}: GroupNorm needs multiples of 8 "
                             "(or fewer than 8 channels)")

    @property
    def is_default(self) -> bool:
        return self.kind == "patch"

    def downsampling(self) -> int:
        """The stem's total stride (1 for a patch stem, whose stride is the patch size)."""
        return 2 ** len(self.channels)

    def to_dict(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        data["channels"] = list(self.channels)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VisionStemConfig":
        return from_dict_strict(cls, data, "fields")


def _groups(channels: int) -> int:
    return 8 if channels >= 8 else 1


class ConvStem(nn.Module):
    """Stride-2 3x3 convolutions (each followed by GroupNorm and GELU), then a 1x1 convolution to the width.

    Args:
        width: the transformer's width (output channels).
        config: the stem's settings (``kind == "conv"``).
    """

    def __init__(self, width: int, config: VisionStemConfig) -> None:
        super().__init__()
        layers = []
        channels_in = 3
        for channels in config.channels:
            layers.append(nn.Conv2d(channels_in, channels, 3, stride=2, padding=1, bias=config.norm == "none"))
            if config.norm == "group":
                layers.append(nn.GroupNorm(_groups(channels), channels))
            layers.append(nn.GELU())
            channels_in = channels
        layers.append(nn.Conv2d(channels_in, width, 1))
        self.layers = nn.Sequential(*layers)

    @property
    def weight(self) -> Tensor:
        """The first convolution's weight (callers read ``conv1.weight.dtype`` to cast images)."""
        return self.layers[0].weight

    def forward(self, images: Tensor) -> Tensor:
        """images (B, 3, H, W) -> tokens (B, width, H / 2**n, W / 2**n)."""
        return self.layers(images)


def attach_stem(visual: nn.Module, config: VisionStemConfig) -> None:
    """Replace ``visual.conv1`` (open_clip's patchify convolution) with the stem ``config`` describes, in place.

    Raises:
        ValueError: the tower has no patchify ``conv1``, or the stem's stride differs from the patch size.
    """
    if config.is_default:
        return
    conv1 = getattr(visual, "conv1", None)
    if not isinstance(conv1, nn.Conv2d):
        raise InputError(f"a conv stem needs a ViT with a patchify conv1; {type(visual).__name__} has none")
    patch = conv1.stride[0]
    if config.downsampling() != patch:
        raise InputError(f"VisionStemConfig.channels={list(config.channels)}: {len(config.channels)} stride-2 "
                         f"convolutions downsample {config.downsampling()}x, but the patch size is {patch}")
    visual.conv1 = ConvStem(conv1.out_channels, config).to(device=conv1.weight.device, dtype=conv1.weight.dtype)
