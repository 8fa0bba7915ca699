"""`SynthStream`: training batches drawn from the synthetic world's endless scene stream (``--train-data
synth-stream[:KEY=VALUE,...]``), resumable like the shard pipeline.

Family ``f`` of an epoch goes to the (rank, worker) slot ``f % slots``; a slot's batches are consecutive samples, so
families (hard negatives) stay inside one batch when the batch size is a multiple of the family size. Scenes are
rendered only when a sample is decoded, so a resumed run skips what it already consumed without drawing it.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from PIL import Image

from memclip.errors import InputError

from ..data.shard_stream import BatchStream, SkipCounter
from .render import render_scene
from .stream import SceneStream, StreamConfig

PREFIX = "synth-stream"


def is_synth_stream(spec: str) -> bool:
    return spec == PREFIX or spec.startswith(PREFIX + ":")


def parse_stream_spec(spec: str) -> StreamConfig:
    """``synth-stream`` or ``synth-stream:family_size=4,max_objects=6,salience=strict`` -> the stream's settings.

    Raises:
        ValueError: not a stream spec, or a malformed / unknown setting.
    """
    if not is_synth_stream(spec):
        raise InputError(f"{spec!r} is not a synth stream (expected '{PREFIX}' or '{PREFIX}:KEY=VALUE,...')")
    overrides: Dict[str, str] = {}
    body = spec[len(PREFIX) + 1:]
    for item in filter(None, (part.strip() for part in body.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{spec!r}: settings are KEY=VALUE separated by commas, got {item!r}")
        if key.strip() in overrides:
            raise InputError(f"{spec!r}: {key.strip()} is given twice")
        overrides[key.strip()] = value.strip()
    return StreamConfig.from_overrides(overrides)


class _RenderThenDecode:
    """Draws the sample's scene into an image, then hands the sample to the ordinary decoder."""

    def __init__(self, decoder: Callable[[Mapping[str, Any]], Dict[str, Any]], config: StreamConfig) -> None:
        self.decoder = decoder
        self.config = config

    @property
    def epoch(self) -> int:
        return getattr(self.decoder, "epoch", 0)

    @epoch.setter
    def epoch(self, value: int) -> None:
        if hasattr(self.decoder, "epoch"):
            self.decoder.epoch = value

    def __call__(self, raw: Mapping[str, Any]) -> Dict[str, Any]:
        rendering = render_scene(raw["scene"], self.config.world, self.config.render)
        return self.decoder({**raw, "png": Image.fromarray(rendering.image)})


class SynthStream(BatchStream):
    """Batches of fresh synthetic scenes; see the module docstring.

    Args:
        config: the stream's settings.
        decoder: raw sample (with a PIL image under ``png``) -> dict of tensors.
        batch_size: samples per batch (a multiple of ``config.family_size``).
        batches_per_worker: batches each (rank, worker) yields per epoch.
        seed: the stream's seed (scenes are a pure function of seed, epoch and family index).
        rank, world_size: this process in the data-parallel group.
    Raises:
        ValueError: the batch size would split families.
    """

    def __init__(self, config: StreamConfig, decoder: Callable[[Mapping[str, Any]], Dict[str, Any]],
                 batch_size: int, batches_per_worker: Optional[int], seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        if batch_size % config.family_size:
            raise InputError(f"--batch-size {batch_size} must be a multiple of the synth stream's family_size "
                             f"{config.family_size}, so that each family of hard negatives stays in one batch")
        super().__init__(_RenderThenDecode(decoder, config), batch_size, batches_per_worker, seed, 0, rank,
                         world_size)
        self.config = config
        self.scenes = SceneStream(config, seed)

    def _pass(self, cycle: int, slot: int, slots: int, skips: SkipCounter
              ) -> Tuple[List[str], Iterator[Dict[str, Any]]]:
        """The stream is endless: its first pass never ends."""
        return [SceneStream.url], (sample for samples in self.scenes.families(self.epoch, slot, slots)
                                   for sample in samples)

    def _sources(self) -> List[str]:
        return [SceneStream.url]

    def _describe(self) -> str:
        return "the synthetic scene stream"

    def settings(self) -> str:
        return repr(self.config)
