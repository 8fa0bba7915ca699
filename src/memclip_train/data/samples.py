"""Turning one raw sample (image bytes and caption fields) into model inputs.

Random augmentation is seeded per sample from (seed, epoch, shard file name, sample key), so a sample is transformed
the same way whether or not the run was interrupted and resumed, and wherever the shards live (another folder, a
bucket, a pipe): the stream position alone decides what the model sees.

What the decoder does with what it is given (nothing silently):

- dropped, and counted by reason (:class:`SkipSample`): no image, an image that does not decode, no caption, text
  that cannot be decoded for any reason (not UTF-8, json that does not parse or nests too deep), a caption field that
  is not text (a number, a list, an object; ``null`` counts as absent);
- stood in, and counted per batch (``<role>_missing``): in stage 2 a sample without the long caption trains on its
  short one, and one without a short caption on the long caption's first sentence (Long-CLIP's convention);
- counted twice: never; a sample is dropped for its first problem only;
- an empty source: the stream stops with :class:`~memclip_train.data.shard_stream.NoSamplesError`.
"""
from __future__ import annotations

import io
import json
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch
from PIL import Image

from memclip.errors import InputError

from .captions import first_sentence

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
CAPTION_ROLES = ("text", "long", "short")


class SkipSample(Exception):
    """A sample that cannot be used; ``reason`` ('no image', 'undecodable image', 'no caption', 'bad text', 'caption
    not text') is counted, ``key`` (shard or table, and sample key) names the sample."""

    def __init__(self, reason: str, key: str = "") -> None:
        super().__init__(f"{reason}: {key}" if key else reason)
        self.reason = reason
        self.key = key


@dataclass(frozen=True)
class SampleFields:
    """What a task needs from each sample.

    Attributes:
        image: decode and transform the image.
        captions: caption roles to tokenize: ``text`` (the ``--caption-key`` caption), ``long`` and ``short``
            (stage 2: short falls back to the long caption's first sentence).
    """

    image: bool = True
    captions: Tuple[str, ...] = ("text",)

    def __post_init__(self) -> None:
        bad = [c for c in self.captions if c not in CAPTION_ROLES]
        if bad:
            raise InputError(f"unknown caption roles {bad}; known: {CAPTION_ROLES}")


class CaptionTokenizer:
    """Tokenize one caption to (context,) int64 and say whether it was cut at the context length."""

    def __init__(self, tokenizer: Callable) -> None:
        self.tokenizer = tokenizer
        self.context_length = tokenizer.context_length
        self._fast = callable(getattr(tokenizer, "encode", None)) and hasattr(tokenizer, "sot_token_id") \
            and getattr(tokenizer, "reduction_fn", None) is None

    def __call__(self, text: str) -> Tuple[torch.Tensor, bool]:
        if not self._fast:
            tokens = self.tokenizer([text])[0]
            long_tokens = self.tokenizer([text], context_length=4096)[0]
            return tokens, bool((long_tokens != 0).sum() > self.context_length)
        ids = [self.tokenizer.sot_token_id] + self.tokenizer.encode(text) + [self.tokenizer.eot_token_id]
        cut = len(ids) > self.context_length
        if cut:
            ids = ids[:self.context_length]
            ids[-1] = self.tokenizer.eot_token_id
        tokens = torch.zeros(self.context_length, dtype=torch.long)
        tokens[:len(ids)] = torch.tensor(ids, dtype=torch.long)
        return tokens, cut


class CaptionNotText(InputError):
    """A caption field that holds something other than text (a number, a list, an object)."""


def _field(raw: Mapping[str, Any], spec: Optional[str]) -> Optional[str]:
    """Read ``txt`` or ``json.long`` style fields from a raw sample (bytes or already-decoded values); None when the
    sample lacks the field, it is ``null`` or blank.

    Raises:
        ValueError: the bytes are not UTF-8 or the json does not parse (``json.JSONDecodeError``), or the field is not
            text (:class:`CaptionNotText`).
        RecursionError: the json nests too deep to parse.
    """
    if not spec:
        return None
    name, _, inner = spec.partition(".")
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8")
    if inner:
        data = json.loads(value) if isinstance(value, str) else value
        if not isinstance(data, Mapping):
            raise CaptionNotText(f"{name} holds a json {type(data).__name__}, not an object with {inner!r}")
        value = data.get(inner)
        if value is None:
            return None
    if not isinstance(value, str):
        raise CaptionNotText(f"{spec} is a {type(value).__name__}, not text")
    return value.strip() or None


def sample_seed(seed: int, epoch: int, key: str) -> int:
    return zlib.crc32(f"{seed}:{epoch}:{key}".encode()) & 0x7FFFFFFF


def seed_key(url: str, key: str) -> str:
    """The part of a sample's address that seeds its augmentation: the shard's file name and the sample key, not the
    folder, so copying a dataset elsewhere does not change a run (``/data/a/000001.tar`` and
    ``pipe:aws s3 cp s3://b/000001.tar -`` agree)."""
    words = url.replace("\\", "/").rstrip("/").split("/")[-1].split()
    return f"{words[0] if words else ''}/{key}"


class SampleDecoder:
    """Raw sample -> ``{"image": (3, H, W), "text"/"long"/"short": (context,) int64}`` plus truncation flags.

    Args:
        fields: what to produce.
        preprocess: the image transform.
        tokenizer: open_clip tokenizer (its context length is used).
        caption_key: field of the ``text`` and ``short`` captions (``txt`` or ``json.short``).
        long_caption_key: field of the ``long`` caption (``json.long``).
        seed: the run's seed; with ``epoch`` and the sample key it seeds the augmentation.
    """

    def __init__(self, fields: SampleFields, preprocess: Optional[Callable], tokenizer: Optional[Callable],
                 caption_key: str = "txt", long_caption_key: str = "json.long", seed: int = 0) -> None:
        self.fields = fields
        self.preprocess = preprocess
        self.tokenize = CaptionTokenizer(tokenizer) if tokenizer is not None and fields.captions else None
        self.caption_key = caption_key
        self.long_caption_key = long_caption_key
        self.seed = seed
        self.epoch = 0

    def _captions(self, raw: Mapping[str, Any], key: str) -> Tuple[Dict[str, str], Dict[str, bool]]:
        """The texts of the wanted roles, and for each role whether a stand-in took the place of a missing caption."""
        wanted = self.fields.captions
        try:
            short = _field(raw, self.caption_key)
            long = _field(raw, self.long_caption_key) if "long" in wanted or "short" in wanted else None
        except CaptionNotText as error:
            raise SkipSample("caption not text", key) from error
        except (ValueError, RecursionError) as error:  # not UTF-8, json that does not parse or nests too deep
            raise SkipSample("bad text", key) from error
        texts: Dict[str, str] = {}
        missing: Dict[str, bool] = {}
        if "text" in wanted:
            if short is None:
                raise SkipSample("no caption", key)
            texts["text"] = short
        if "long" in wanted or "short" in wanted:
            if long is None and short is None:
                raise SkipSample("no caption", key)
            if "long" in wanted:
                texts["long"], missing["long"] = long or short, long is None
            if "short" in wanted:
                texts["short"], missing["short"] = short or first_sentence(long), short is None
        return texts, missing

    def _image(self, raw: Mapping[str, Any], key: str, seed_from: str) -> torch.Tensor:
        data = next((raw[k] for k in IMAGE_KEYS if raw.get(k) is not None), None)
        if data is None:
            raise SkipSample("no image", key)
        try:
            image = data if isinstance(data, Image.Image) else Image.open(io.BytesIO(data))
            image = image.convert("RGB")
        except Exception as error:  # PIL raises many types for bad bytes
            raise SkipSample("undecodable image", key) from error
        # Only the CPU generator, which the transforms draw from: torch.manual_seed would also reseed every CUDA
        # generator (which fork_rng(devices=[]) does not restore) and costs about 2 ms a call on a CPU-only build.
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(sample_seed(self.seed, self.epoch, seed_from))
            return self.preprocess(image)

    def __call__(self, raw: Mapping[str, Any]) -> Dict[str, Any]:
        url, name = str(raw.get("__url__", "")), str(raw.get("__key__", ""))
        key = f"{url}/{name}"
        out: Dict[str, Any] = {}
        texts, missing = self._captions(raw, key)
        for role, text in texts.items():
            out[role], out[f"{role}_cut"] = self.tokenize(text)
        for role, stood_in in missing.items():
            out[f"{role}_missing"] = stood_in
        if self.fields.image:
            out["image"] = self._image(raw, key, seed_key(url, name))
        return out


COUNTED_FLAGS = ("_cut", "_missing")
"""Suffixes of per-sample flags that a batch carries as counts: captions cut at the context length, and captions
missing (a stand-in took their place)."""


def collate(samples: list) -> Dict[str, torch.Tensor]:
    """Stack decoded samples: tensors are stacked, flags (:data:`COUNTED_FLAGS`) become int counts."""
    batch: Dict[str, torch.Tensor] = {}
    for name in samples[0]:
        values = [s[name] for s in samples]
        batch[name] = torch.tensor(int(sum(values))) if name.endswith(COUNTED_FLAGS) else torch.stack(values)
    return batch
