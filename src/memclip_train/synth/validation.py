"""Field checks shared by the synth configs: one clear ValueError naming the config, the field and the value."""
from __future__ import annotations

from typing import Any, Optional

from memclip.errors import InputError


def check_int(config: Any, name: str, low: int, high: Optional[int] = None) -> None:
    """Raise ValueError unless ``config.<name>`` is an int (not a bool) in ``low..high`` (inclusive)."""
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f"in {low}..{high}" if high is not None else f">= {low}"
        raise InputError(f"{type(config).__name__}.{name}={value!r}: must be an integer {bounds}")


def check_number(config: Any, name: str, low: float, high: float) -> None:
    """Raise ValueError unless ``config.<name>`` is a real number in ``[low, high]``."""
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InputError(f"{type(config).__name__}.{name}={value!r}: must be a number in [{low}, {high}]")
