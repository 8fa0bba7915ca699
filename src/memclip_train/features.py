"""Batched, normalised features under a model's own transforms and tokenizer, with progress and throughput."""
from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Sequence, Tuple

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from memclip.truncation import token_lengths
from memclip.errors import InputError

from .image_modes import to_rgb


class BadImageError(InputError):
    """An image that is missing, does not decode or has no caption (the message names the file)."""


class NonFiniteFeaturesError(InputError):
    """A model gave features with NaN or infinity: its weights are broken or its precision overflows. Nothing can be
    ranked on them (every comparison with NaN is false), so no number is reported; the message names the model."""


def check_finite(features: torch.Tensor, model_name: str, what: str, names: Callable[[int], str]) -> None:
    """Raise :class:`NonFiniteFeaturesError` when a row of ``features`` (N, ...) holds NaN or infinity.

    Args:
        model_name: the model, as tables name it ('' for "the model"); what: the kind of input ("image", ...);
        names: row index -> how that input is named in the message.
    """
    bad = (~torch.isfinite(features.reshape(len(features), -1))).any(dim=1).nonzero().flatten().tolist()
    if bad:
        raise NonFiniteFeaturesError(
            f"{f'model {model_name}' if model_name else 'the model'} gives non-finite (NaN or inf) {what} features "
            f"for {len(bad)} of {len(features)} "
            f"inputs, e.g. {names(bad[0])}: its weights hold NaN/inf or its precision overflows (try --precision "
            "fp32); nothing was scored")


def describe_image(source, index: int) -> str:
    """How an image source is named in messages: its path, or its position when it is encoded bytes."""
    return f"#{index} ({len(source)} encoded bytes)" if isinstance(source, bytes) else str(source)


class _ImageFiles(Dataset):
    """Image files, or encoded image bytes, under a transform."""

    def __init__(self, paths: Sequence[Path], preprocess: Callable) -> None:
        self.paths = list(paths)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            source = self.paths[index]
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                return index, self.preprocess(to_rgb(image)), ""
        except Exception as error:  # missing files and undecodable bytes: reported by the caller
            return index, None, f"{type(error).__name__}: {error}"


def _collate(items):
    good = [(i, t) for i, t, e in items if t is not None]
    bad = [(i, e) for i, t, e in items if t is None]
    indices = [i for i, _ in good]
    tensors = torch.stack([t for _, t in good]) if good else None
    return indices, tensors, bad


@dataclass
class ImageFeatures:
    """Features of the images that decoded, in order, and the ones that did not."""

    features: torch.Tensor
    kept: List[int]
    bad: List[Tuple[Path, str]] = field(default_factory=list)
    images_per_second: float = 0.0


@torch.no_grad()
def encode_images(model: torch.nn.Module, preprocess: Callable, paths: Sequence[Path], device: torch.device,
                  autocast: Callable, batch_size: int = 64, workers: int = 0, skip_bad: bool = False,
                  progress: bool = True, desc: str = "images", model_name: str = "") -> ImageFeatures:
    """L2-normalised image features (N, D) in float32 on the CPU; ``paths`` are image files or encoded image bytes.

    Raises:
        BadImageError: an image is missing or undecodable and ``skip_bad`` is off (the message names it).
        NonFiniteFeaturesError: the model (``model_name``) gives NaN or infinite features.
    """
    loader = DataLoader(_ImageFiles(paths, preprocess), batch_size=batch_size, num_workers=workers,
                        collate_fn=_collate)
    features, kept, bad = [], [], []
    start = time.time()
    for indices, images, failures in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
        for index, message in failures:
            if not skip_bad:
                raise BadImageError(f"cannot read image {describe_image(paths[index], index)} ({message}); fix the "
                                    "file or pass --skip-bad")
            bad.append((paths[index], message))
        if images is None:
            continue
        with autocast():
            encoded = model.encode_image(images.to(device), normalize=True).float().cpu()
        check_finite(encoded, model_name, "image", lambda row: describe_image(paths[indices[row]], indices[row]))
        features.append(encoded)
        kept.extend(indices)
    seconds = max(time.time() - start, 1e-9)
    if not features:
        raise BadImageError(f"none of the {len(paths)} images could be read")
    return ImageFeatures(torch.cat(features), kept, bad, len(kept) / seconds)


@torch.no_grad()
def encode_texts(model: torch.nn.Module, tokenizer: Callable, texts: Sequence[str], device: torch.device,
                 autocast: Callable, batch_size: int = 256, progress: bool = True,
                 desc: str = "captions", model_name: str = "") -> Tuple[torch.Tensor, int]:
    """L2-normalised caption features (N, D) in float32 on the CPU, and how many captions were cut.

    Raises:
        NonFiniteFeaturesError: the model (``model_name``) gives NaN or infinite features.
    """
    features, cut = [], 0
    context = tokenizer.context_length
    for start in tqdm(range(0, len(texts), batch_size), desc=desc, unit="batch", disable=not progress, leave=False):
        chunk = list(texts[start:start + batch_size])
        tokens = tokenizer(chunk)
        cut += int((token_lengths(tokenizer, chunk) > context).sum())
        with autocast():
            encoded = model.encode_text(tokens.to(device), normalize=True).float().cpu()
        check_finite(encoded, model_name, "caption", lambda row: repr(chunk[row][:80]))
        features.append(encoded)
    return torch.cat(features), cut
