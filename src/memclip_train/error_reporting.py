"""Error reporting shared by the command-line programs (main, eval, convert, synth, sweep, demo, study).

A user error (a bad flag value, a missing or unreadable input, an unknown model or weights tag) ends the program
with one line, ``<program>: error: <message>``, where the message names the input and what is expected, and exit
code 2, like argparse's own errors. A user error is the project's :class:`memclip.InputError` (``UserError`` here)
or a file that is missing, already there or not readable. ``--debug`` (or ``-v``/``--verbose``) also prints the
traceback and logs at debug level. Anything else, a ValueError from torch or numpy included, is a bug and keeps
Python's traceback.

    parser = argparse.ArgumentParser(prog="python -m memclip_train.x")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    return report_user_errors(parser.prog, args.debug, lambda: run(args))
"""
from __future__ import annotations

import argparse
import sys
import traceback
from typing import Callable, Optional

from memclip import InputError

USER_ERROR_EXIT = 2
UserError = InputError
"""The programs' name for :class:`memclip.InputError`, the one user-error class (raise it for a bad input)."""
USER_ERRORS = (InputError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
               PermissionError)


class ProgramFailed(RuntimeError):
    """A program run by another one (a pipeline stage) failed with exit code ``code``, after reporting why."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", "--debug", dest="debug", action="store_true",
                        help="log at debug level, and print the traceback of an error")


def report_user_errors(program: str, debug: bool, body: Callable[[], Optional[int]]) -> int:
    """Run ``body`` and return its exit code (None counts as 0); a user error prints one line and returns 2, a failed
    stage one line and its own exit code."""
    try:
        code = body()
    except ProgramFailed as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        return error.code
    except USER_ERRORS as error:
        if debug:
            traceback.print_exc()
        print(f"{program}: error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT
    return code or 0
