"""`Record`: one image-caption pair to convert, and how its image is found and encoded."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

from PIL import Image, UnidentifiedImageError

from memclip.errors import InputError


@dataclass(frozen=True)
class Record:
    """A sample before conversion.

    Attributes:
        key: the webdataset key (unique, no '.'), e.g. the entry's zero-padded index in the source file.
        image: the image path as the source names it (relative to an image root, or absolute).
        long: the long caption ('' when the source has none).
        short: the short caption ('' when the source has none).
    """

    key: str
    image: str
    long: str
    short: str


@dataclass(frozen=True)
class ImageOptions:
    """How images are re-encoded: ``max_side`` (None keeps the size) and the JPEG quality."""

    max_side: Optional[int] = None
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        if self.max_side is not None and self.max_side < 8:
            raise InputError(f"max_side={self.max_side}: must be at least 8 pixels, or None")
        if not 1 <= self.jpeg_quality <= 100:
            raise InputError(f"jpeg_quality={self.jpeg_quality}: must be in 1..100")


class BadImage(Exception):
    """An image that cannot be used; ``reason`` is 'missing', 'corrupt' or 'outside_root'."""

    def __init__(self, reason: str, path: str, detail: str = "") -> None:
        super().__init__(f"{reason} image {path}{': ' + detail if detail else ''}")
        self.reason = reason


def find_image(name: str, roots: Sequence[Path]) -> Path:
    """The image ``name`` names: the first ``root / name`` that exists (or ``name`` itself when absolute), resolved.

    Only files inside one of the roots are used, after symlinks are followed: a source cannot make the converter
    read (and pack into shards) a file elsewhere with ``../``, an absolute path or a symlink.

    Raises:
        BadImage: 'missing' when no candidate exists, 'outside_root' when it resolves outside every root.
    """
    candidate = Path(name)
    for path in [candidate] if candidate.is_absolute() else [root / candidate for root in roots]:
        if path.is_file():
            real = path.resolve()
            if not any(real.is_relative_to(root.resolve()) for root in roots):
                raise BadImage("outside_root", name, f"resolves to {real}, outside {[str(r) for r in roots]}")
            return real
    raise BadImage("missing", name, f"not found under {[str(r) for r in roots]}")


def encode_image(path: Path, options: ImageOptions) -> Tuple[bytes, Tuple[int, int]]:
    """JPEG bytes of the image (resized so its longer side is at most ``max_side``) and its final (width, height).

    A JPEG that needs no resize is passed through byte for byte.
    Raises:
        BadImage('corrupt'): the file does not decode.
    """
    raw = path.read_bytes()
    try:
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            size = image.size
            needs_resize = options.max_side is not None and max(size) > options.max_side
            if image.format == "JPEG" and image.mode == "RGB" and not needs_resize:
                return raw, size
            image = image.convert("RGB")
            if needs_resize:
                scale = options.max_side / max(size)
                size = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
                image = image.resize(size, Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=options.jpeg_quality)
            return buffer.getvalue(), size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise BadImage("corrupt", str(path), str(error)) from error
