"""The exit hook waits for the process's other threads to go idle, judging by what they do, not by a clock.

The abort it prevents (a gloo worker asking for the GIL after interpreter shutdown has begun) is
measured end to end by ``test_clean_exit.py``; here the two parts the hook relies on are checked:
it sees a thread that is still running, and it waits for that thread (up to its cap) but not for
idle ones.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

BUSY_THREAD = textwrap.dedent(
    """
    import hashlib, threading, time
    from statetrain.distributed.teardown import runnable_threads, settle_other_threads

    stop = threading.Event()
    block = bytes(1 << 24)

    def hash_until_stopped():  # hashing a large block runs without the GIL: the thread stays runnable
        while not stop.is_set():
            hashlib.sha256(block).digest()

    sleeper = threading.Thread(target=stop.wait, daemon=True)  # idle: must not hold up the exit
    sleeper.start()
    started = time.monotonic()
    settled_idle = settle_other_threads(cap_seconds=30.0)
    idle_wait = time.monotonic() - started
    worker = threading.Thread(target=hash_until_stopped, daemon=True)
    worker.start()
    time.sleep(0.1)
    busy = max(runnable_threads() for _ in range(20))
    settled_while_busy = settle_other_threads(cap_seconds=0.3)
    threading.Timer(0.2, stop.set).start()
    settled_after_stop = settle_other_threads(cap_seconds=5.0)
    print(settled_idle, idle_wait < 10.0, busy, settled_while_busy, settled_after_stop)
    """
)


def test_a_running_thread_is_seen_and_waited_for_until_it_stops() -> None:
    done = subprocess.run([sys.executable, "-c", BUSY_THREAD], capture_output=True, text=True, check=True)
    settled_idle, idle_was_short, busy, settled_while_busy, settled_after_stop = done.stdout.split()
    assert (settled_idle, idle_was_short) == ("True", "True")  # a sleeping thread does not hold up the exit
    assert int(busy) >= 1
    assert settled_while_busy == "False"  # the cap ran out while the thread kept running
    assert settled_after_stop == "True"
