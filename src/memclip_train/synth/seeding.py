"""Per-item random generators: every image's randomness comes from (seed, split, index), never from run order.

That is what makes the output byte-identical for one seed whatever the number of worker processes.
"""
from __future__ import annotations

import random


def item_rng(seed: int, split: str, index: int, purpose: str) -> random.Random:
    """A generator for one item and one purpose ("scene", "caption", ...).

    ``random.Random`` seeds from a string through SHA-512, so the stream is stable across processes and runs
    (unlike ``hash()``, which is salted per process).
    """
    return random.Random(f"memclip-synth/{seed}/{split}/{index}/{purpose}")
