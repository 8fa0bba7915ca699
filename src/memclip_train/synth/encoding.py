"""Image encoders with fixed settings: JPEG for pictures, palette PNG for VOC-style class masks."""
from __future__ import annotations

import io
from typing import List

import numpy as np
from PIL import Image


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """(H, W, 3) uint8 RGB -> JPEG bytes, without chroma subsampling (colour is a fine-grained attribute here)."""
    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def voc_palette() -> List[int]:
    """The PASCAL VOC colour map: 256 RGB triples flattened (label 0 black, 255 cream, as VOC's masks)."""
    palette = []
    for label in range(256):
        r = g = b = 0
        code = label
        for shift in range(7, -1, -1):
            r |= (code & 1) << shift
            g |= ((code >> 1) & 1) << shift
            b |= ((code >> 2) & 1) << shift
            code >>= 3
        palette.extend((r, g, b))
    return palette


VOC_PALETTE = voc_palette()


def encode_palette_png(mask: np.ndarray) -> bytes:
    """(H, W) uint8 labels -> palette PNG bytes with the VOC colour map."""
    labels = np.ascontiguousarray(mask, dtype=np.uint8)
    image = Image.frombytes("P", (labels.shape[1], labels.shape[0]), labels.tobytes())
    image.putpalette(VOC_PALETTE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
