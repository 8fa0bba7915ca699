"""When the programs draw progress bars: only when asked (no ``--no-progress``) and stderr is a terminal.

A bar redraws itself with carriage returns; written to a file (SLURM's ``slurm-%j.out``, a redirected log, CI) those
frames fill it between the log lines. There the periodic log line is the progress (training logs every
``--log-every-n-steps``), so train, eval, convert and synth draw bars on a terminal only.
"""
from __future__ import annotations

import sys


def show_progress(requested: bool = True) -> bool:
    """Whether to draw progress bars: ``requested`` and stderr (where tqdm draws) is a terminal."""
    return requested and sys.stderr.isatty()
