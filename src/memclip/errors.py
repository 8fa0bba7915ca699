"""`InputError`: the project's one user-error class: a bad input, named in the message with what is expected."""
from __future__ import annotations


class InputError(ValueError, RuntimeError):
    """Bad input to memclip or its programs: an unknown model name or weights tag, a weights file that cannot be read
    or is refused, weights that do not fit the model, a bad flag value, a data set without its layout. The message
    names the input and what is expected. The programs report it in one line (:mod:`memclip_train.error_reporting`);
    any other exception is a bug and keeps its traceback.

    A ValueError (a bad value) and a RuntimeError (as open_clip raises for an unknown model or unloadable weights),
    so code catching either keeps working."""
