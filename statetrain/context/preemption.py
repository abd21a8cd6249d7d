"""Preemption: SIGTERM or SIGINT asks the run to stop cleanly at the next window boundary.

The handler only records the request; the machine's guard turns it into the ``preempt`` state,
which writes a checkpoint, after which ``train()`` raises :class:`TrainingPreempted` naming it.
A second SIGINT aborts at once (a person at a keyboard means it); repeated SIGTERMs, which
schedulers and launchers often send, do not. Handlers are installed for the duration of
``train()`` only and the previous ones are put back, so importing statetrain changes nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

PREEMPTION_EXIT_CODE = 75
"""What ``statetrain`` commands exit with when training was preempted (``EX_TEMPFAIL``: retry)."""


class TrainingPreempted(RuntimeError):
    """Training stopped on a signal after writing a checkpoint; resume from ``checkpoint``."""

    def __init__(self, signal_name: str, checkpoint: Path, global_step: int) -> None:
        self.signal_name = signal_name
        self.checkpoint = checkpoint
        self.global_step = global_step
        super().__init__(
            f"training stopped by {signal_name} at step {global_step}; checkpoint written to "
            f"{checkpoint} (resume with train(resume_from_checkpoint={str(checkpoint)!r}))"
        )


class PreemptionRequest:
    """The pending signal, if any; read by the machine's guard.

    With several processes (``coordinated``) the guard reads ``agreed`` instead of this process's
    own signal: ranks exchange their pending signals at step boundaries
    (:func:`statetrain.distributed.processes.agree_on_preemption`), so every rank stops at the same
    optimizer step even when only one of them was signalled.
    """

    def __init__(self, coordinated: bool = False) -> None:
        self.signum: int | None = None
        self.coordinated = coordinated
        self.agreed: int | None = None

    @property
    def requested(self) -> bool:
        return (self.agreed if self.coordinated else self.signum) is not None

    @property
    def signal_name(self) -> str:
        signum = self.agreed if self.coordinated else self.signum
        return signal.Signals(signum).name if signum is not None else ""

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt("second interrupt: aborting without a checkpoint")
        if self.signum is None:
            self.signum = signum


@contextmanager
def preemption_handlers(request: PreemptionRequest) -> Iterator[PreemptionRequest]:
    """Route SIGTERM and SIGINT to ``request`` while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous: dict[int, Any] = {}
    try:
        for signum in (int(signal.SIGTERM), int(signal.SIGINT)):
            previous[signum] = signal.signal(signum, request.handle)
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
