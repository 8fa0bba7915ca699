"""Named markings: the world's knowledge-heavy axis (off unless ``MarkingConfig.count`` > 0).

A marking is a small black-and-white glyph (a ``grid`` x ``grid`` bit pattern in a white frame) painted on the
salient object of a scene, and it has a made-up name ("vapen", "mebrolu", ...) that appears in long captions only.
Nothing about a glyph tells its name: the K glyph -> name associations are facts to memorise, not to compose.

Both the glyph and the name of marking ``i`` are pure functions of ``i``: the vocabulary of a world with K markings
is the first K entries of one fixed sequence, so marking 7 looks and is called the same whatever K is. Any two glyphs
differ in at least ``min_distance`` bits, so a one-bit blur cannot turn one marking into another.
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Dict, Tuple

import numpy as np

from memclip.errors import InputError

from .validation import check_int, check_number

MAX_MARKINGS = 1000
ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gl", "kr", "pl", "sk",
          "st", "tr", "vl", "zh")
VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
CODAS = ("", "", "", "l", "n", "r", "s", "k", "m")
INK = (15, 15, 15)
PAPER = (250, 250, 250)


@dataclass(frozen=True)
class MarkingConfig:
    """The world's named markings (validated when built).

    Attributes:
        count: K, the number of distinct markings (0: no markings, the world is exactly the one without them).
        grid: bits per side of a glyph.
        min_distance: fewest bits in which any two glyphs differ.
        badge: side of the painted badge (glyph plus a white frame half a bit wide) as a fraction of a grid cell.
        family: training and validation samples in a row that show one scene with different markings (1: every
            sample its own scene). Kept together in a batch (no shuffle buffer), such a family is a set of hard
            negatives whose long captions differ only in the marking's name.
    """

    count: int = 0
    grid: int = 4
    min_distance: int = 3
    badge: float = 0.5
    family: int = 1

    def __post_init__(self) -> None:
        check_int(self, "count", 0, MAX_MARKINGS)
        check_int(self, "grid", 2, 6)
        check_int(self, "min_distance", 1, self.grid * self.grid)
        check_number(self, "badge", 0.2, 0.9)
        check_int(self, "family", 1, 64)
        if self.family > max(self.count, 1):
            raise InputError(f"MarkingConfig.family={self.family}: a family shows distinct markings, so it needs "
                             f"family <= count ({self.count})")

    @property
    def enabled(self) -> bool:
        return self.count > 0

    def names(self) -> Tuple[str, ...]:
        """The K names, marking 0 first."""
        return marking_names(self.count)

    def glyphs(self) -> np.ndarray:
        """(K, grid, grid) bool: the bit pattern of each marking (True = ink)."""
        return marking_glyphs(self.count, self.grid, self.min_distance)

    def index(self, name: str) -> int:
        """The id of the marking called ``name``.

        Raises:
            KeyError: no marking of this world has that name.
        """
        return _name_index(self.count)[name]

    def vocabulary(self) -> Dict[str, Any]:
        """The settings, names and glyphs (as rows of 0/1 strings) as JSON-ready data, for world.json."""
        glyphs = ["".join("1" if bit else "0" for bit in glyph.ravel()) for glyph in self.glyphs()]
        return {**dataclasses.asdict(self), "names": list(self.names()), "glyphs": glyphs}


def _name(rng: random.Random) -> str:
    syllables = rng.choice((2, 2, 3))
    return "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(syllables - 1)) + (
        rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS))


@lru_cache(maxsize=None)
def _name_sequence() -> Tuple[str, ...]:
    names, taken = [], set()
    for index in range(MAX_MARKINGS):
        rng = random.Random(f"memclip-synth-marking-name/{index}")
        name = _name(rng)
        while name in taken or len(name) < 5:
            name = _name(rng)
        taken.add(name)
        names.append(name)
    return tuple(names)


def marking_names(count: int) -> Tuple[str, ...]:
    """The first ``count`` marking names: made-up words of 5 letters or more, unique, and the same for every K."""
    return _name_sequence()[:count]


@lru_cache(maxsize=None)
def _name_index(count: int) -> Dict[str, int]:
    return {name: index for index, name in enumerate(marking_names(count))}


@lru_cache(maxsize=None)
def _glyph_sequence(grid: int, min_distance: int) -> np.ndarray:
    """Greedy code in a fixed random order: each candidate bit pattern with between a quarter and three quarters of
    its bits set is kept when it differs from every kept one in ``min_distance`` bits or more."""
    bits = grid * grid
    order = list(range(2 ** bits))
    random.Random(f"memclip-synth-marking-glyphs/{grid}").shuffle(order)
    candidates = np.asarray(order, dtype=np.int64)
    weights = np.asarray([bin(code).count("1") for code in order])
    candidates = candidates[(weights >= bits // 4) & (weights <= bits - bits // 4)]
    kept = np.zeros(MAX_MARKINGS, dtype=np.int64)
    count = 0
    for code in candidates:
        if count:
            differing = np.bitwise_xor(kept[:count], code)
            distances = np.unpackbits(differing.view(np.uint8).reshape(count, 8), axis=1).sum(axis=1)
            if distances.min() < min_distance:
                continue
        kept[count] = code
        count += 1
        if count == MAX_MARKINGS:
            break
    codes = kept[:count]
    return ((codes[:, None] >> np.arange(bits)[None, :]) & 1).astype(bool).reshape(count, grid, grid)


def marking_glyphs(count: int, grid: int, min_distance: int) -> np.ndarray:
    """(count, grid, grid) bool glyphs: the first ``count`` of the fixed sequence for this grid and distance.

    Raises:
        ValueError: the grid holds fewer than ``count`` glyphs this far apart.
    """
    sequence = _glyph_sequence(grid, min_distance)
    if count > len(sequence):
        raise InputError(f"MarkingConfig: a {grid}x{grid} grid holds only {len(sequence)} glyphs that differ in "
                         f"{min_distance}+ bits; lower count or min_distance, or raise grid")
    return sequence[:count]


@lru_cache(maxsize=4096)
def badge_coverage(glyph_bits: bytes, grid: int, side: int, badge: float, supersample: int
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """Coverage of a badge centred in a ``side`` x ``side`` pixel square: the glyph's ``grid`` x ``grid`` bits inside
    a white frame half a bit wide, the whole ``badge * side`` pixels across.

    Args:
        glyph_bits: the glyph as ``grid * grid`` bytes (1 = ink), row-major.
    Returns:
        (ink, paper): two (side, side) float32 arrays in [0, 1], the share of each pixel painted black and white.
        Cached and read-only.
    """
    canvas = side * supersample
    extent = badge * canvas
    cell = extent / (grid + 1)
    start = (canvas - extent) / 2
    centres = np.arange(canvas) + 0.5 - start
    inside = (centres >= 0) & (centres < extent)
    index = np.clip(np.floor(centres / cell - 0.5).astype(int), -1, grid)
    in_glyph = (index >= 0) & (index < grid)
    bits = np.frombuffer(glyph_bits, dtype=np.uint8).reshape(grid, grid).astype(bool)
    badge_area = inside[:, None] & inside[None, :]
    glyph_area = in_glyph[:, None] & in_glyph[None, :]
    rows, columns = np.clip(index, 0, grid - 1)[:, None], np.clip(index, 0, grid - 1)[None, :]
    ink = badge_area & glyph_area & bits[rows, columns]
    paper = badge_area & ~ink
    result = []
    for array in (ink, paper):
        pooled = array.reshape(side, supersample, side, supersample).mean(axis=(1, 3), dtype=np.float32)
        pooled.flags.writeable = False
        result.append(pooled)
    return result[0], result[1]
