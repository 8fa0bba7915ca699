"""`InputError`: a model name, weights tag or weights file that memclip cannot use."""
from __future__ import annotations


class InputError(RuntimeError):
    """Bad input to memclip: an unknown model name or weights tag, a weights file that cannot be read or is refused,
    or weights that do not fit the model. The message names the input and what is expected. (A RuntimeError, as
    open_clip raises for the same cases.)"""
