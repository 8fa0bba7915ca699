"""argparse ``type=`` functions that refuse, when the command line is parsed, values that can only be mistakes.

argparse names the flag in its one-line error (``error: argument --stride: must be at least 1, got 0``) and exits
with code 2, before any model or data is loaded.

    parser.add_argument("--stride", type=at_least(1))
    parser.add_argument("--logit-scale", type=positive_float, default=40.0)
"""
from __future__ import annotations

import argparse
import math
from typing import Callable, List


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def at_least(minimum: int) -> Callable[[str], int]:
    """An integer of at least ``minimum`` (``at_least(1)``: a count or size; ``at_least(0)``: may be zero)."""

    def parse(text: str) -> int:
        value = _integer(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def positive_float(text: str) -> float:
    """A finite number above zero (``nan``, ``inf``, 0 and negatives are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def non_empty(text: str) -> str:
    """A string with something besides white space."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def integer_list(text: str) -> List[int]:
    """Integers separated by commas (``--seeds 0,1,2``); empty items are ignored."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected integers separated by commas") from None
