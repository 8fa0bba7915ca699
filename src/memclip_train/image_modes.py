"""`to_rgb`: any decoded image as 8-bit RGB, with 16-bit images scaled rather than clipped.

PIL opens a 16-bit grayscale PNG in mode ``I;16`` (or ``I``) and its ``convert("RGB")`` clips every value above 255
to white: a normally exposed 16-bit image comes out almost entirely white, and a model scores that instead. 16-bit
colour PNGs are already reduced to 8 bits by PIL when they are opened, so only the integer grayscale modes need help.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
"""Integer grayscale modes, read as 0 ... 65535 (PIL opens 16-bit PNG, PGM and TIFF files in them)."""


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` in mode RGB; integer grayscale (:data:`SIXTEEN_BIT_MODES`) scaled from 0 ... 65535 to 0 ... 255."""
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        scaled = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    return image.convert("RGB")
