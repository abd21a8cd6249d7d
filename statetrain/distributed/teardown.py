"""Ending a distributed process cleanly: its process groups are released while the interpreter is whole.

Why this exists: a gloo worker thread finishes a collective (an ``all_gather`` of evaluation
results, say) and then drops its record of it, which releases the tensors it held. Tensors that
Python also saw need the GIL to be released. When the main thread returns from that collective
and reaches interpreter shutdown within Python's switch interval (5 ms: an evaluation that ends
the script does), the worker asks for the GIL only after shutdown has begun; Python then ends the
thread, the unwind meets a C++ frame that may not throw, and the process aborts with
``terminate called without an active exception`` (SIGABRT) although the run had finished. A core
dump of such a rank shows ``ProcessGroupGloo::runLoop`` -> ``~AsyncAllgatherWork`` ->
``TensorImpl::decref_pyobject`` -> ``take_gil`` -> ``pthread_exit``.

So at exit (an ``atexit`` hook, before shutdown begins), the groups are destroyed and the main
thread lets go of the GIL until no other thread of the process is runnable: a worker waiting for
the GIL takes it, finishes, and goes idle; a worker the OS had put aside is given time to run.
The wait is judged by progress (threads still running), bounded by :data:`SETTLE_CAP_SECONDS`.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time

import torch

from statetrain.distributed.processes import destroy_cpu_groups

logger = logging.getLogger(__name__)

SETTLE_CAP_SECONDS = 2.0  # the most an exit waits for other threads to go idle
_QUIET_CHECKS = 3  # consecutive looks that find no other thread runnable
_PAUSE_SECONDS = 0.002  # each look first lets go of the GIL this long

_EXIT_HOOK: list[bool] = []


def release_process_groups_at_exit() -> None:
    """Register, once, the exit hook that destroys this process's groups and lets its threads settle.

    Called when a run has built its accelerator; does nothing in a process that joined no group.
    """
    if _EXIT_HOOK or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    _EXIT_HOOK.append(True)
    atexit.register(release_process_groups)


def release_process_groups() -> None:
    """Destroy the side groups and the default group, then wait for the other threads to go idle."""
    destroy_cpu_groups()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        try:
            torch.distributed.destroy_process_group()
        except (RuntimeError, ValueError) as exc:  # the application destroyed it already
            logger.debug("default process group already gone: %s", exc)
    settle_other_threads()


def settle_other_threads(cap_seconds: float = SETTLE_CAP_SECONDS) -> bool:
    """Let go of the GIL until no other thread of this process is runnable; False when the cap ran out."""
    deadline = time.monotonic() + cap_seconds
    quiet = 0
    while quiet < _QUIET_CHECKS:
        if time.monotonic() > deadline:
            return False
        time.sleep(_PAUSE_SECONDS)  # a thread waiting for the GIL takes it now
        runnable = runnable_threads()
        if runnable is None:  # no /proc to look at: the pauses alone must do
            runnable = 0
        quiet = quiet + 1 if runnable == 0 else 0
    return True


def runnable_threads() -> int | None:
    """How many threads of this process, other than the calling one, are running or runnable (None: unknown)."""
    tasks = f"/proc/{os.getpid()}/task"
    if not os.path.isdir(tasks):
        return None
    me = threading.get_native_id()
    count = 0
    for entry in os.listdir(tasks):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"{tasks}/{entry}/stat", encoding="ascii", errors="replace") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # the thread ended meanwhile
        count += state == "R"
    return count
