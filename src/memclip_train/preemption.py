"""Stopping cleanly before a time limit: SIGUSR1/SIGTERM set a flag; the trainer saves and exits at a safe step.

SLURM sends the signal ``--signal=USR1@300`` seconds before the limit (and SIGTERM on preemption). The trainer
checks the flag at its log steps (where ranks already synchronise), agrees across ranks, writes
``epoch_latest.pt`` and exits with :data:`PREEMPTED_EXIT_CODE`, on which the sbatch scripts requeue the job.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Iterable

import torch

from .distributed import DistributedEnv, all_reduce_max

logger = logging.getLogger(__name__)

PREEMPTED_EXIT_CODE = 3
SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


def leave_signals_to_the_main_process(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: SIGUSR1/SIGTERM from anyone but the main process leave the worker running.

    SLURM's preemption and ``scancel`` signal every process of the step. A worker killed by the signal would take the
    run down before the main process saves; so the worker blocks both signals and a thread waits for them, ending
    the worker only on a SIGTERM from the main process (how the DataLoader stops a worker, as torch's own handler
    does) and ignoring the rest. The workers keep serving batches until the main process has saved.
    """
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)  # threads started from here on inherit the mask

    def wait() -> None:
        while True:
            received = signal.sigwaitinfo(SIGNALS)
            if received.si_signo == signal.SIGTERM and received.si_pid == parent:
                os._exit(0)

    threading.Thread(target=wait, name="worker-signals", daemon=True).start()


class Preempted(RuntimeError):
    """Raised after the checkpoint is written; the run should exit with PREEMPTED_EXIT_CODE."""


class PreemptionFlag:
    """Set by SIGUSR1/SIGTERM while its ``with`` block runs: entering installs the handlers (only in the main thread;
    elsewhere the flag stays unset), leaving puts back the ones that were there before.

        >>> with PreemptionFlag() as preemption:
        ...     train(stop_when=lambda: preemption.requested)
    """

    def __init__(self, signals: Iterable[int] = SIGNALS) -> None:
        self.signals = tuple(signals)
        self.requested = False
        self.signal_name = ""
        self._previous = {}

    def __enter__(self) -> "PreemptionFlag":
        if threading.current_thread() is threading.main_thread():
            for number in self.signals:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def _handle(self, number: int, frame) -> None:
        self.requested = True
        self.signal_name = signal.Signals(number).name
        logger.warning("received %s: will save a checkpoint and stop at the next safe step", self.signal_name)

    def agreed(self, env: DistributedEnv) -> bool:
        """Whether any rank received a signal (a collective in distributed runs: call it on every rank)."""
        flag = torch.tensor(int(self.requested), device=env.device)
        return bool(all_reduce_max(flag, env).item())
