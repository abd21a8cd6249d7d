"""Starting ``run_ddp.py`` (and friends) in fresh processes, as a user's launcher would, on CPU only.

A launch is judged hung by lack of progress, not by a wall-clock limit: on a busy 2-core machine (a
second suite running beside this one) a healthy launch may take minutes, while a deadlocked one
stops using CPU and stops writing output. :func:`run_launched` kills the launch's whole process
group once neither its output nor the CPU time of its processes has grown for :data:`HANG_SECONDS`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parents[2]
HANG_SECONDS = 120  # no output and no CPU time used by any process of the launch for this long: a hang
LAUNCH_CAP = 1800  # a last resort against a launch that keeps spinning without end
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
_LAUNCHER_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_CPU")


def launch_env(**extra: str) -> dict[str, str]:
    """This environment without any launcher's variables and without GPUs, plus ``extra``."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT), **extra}
    for name in _LAUNCHER_VARIABLES:
        env.pop(name, None)
    return env


def run_launched(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``command`` from the repository root with its output piped; kill it only when it makes no progress.

    A hung launch comes back with return code ``-9`` and a line saying so at the end of its stderr.
    """
    return _launch_once(command, env)


def _launch_once(command: list[str], env: dict[str, str] | None) -> subprocess.CompletedProcess[str]:
    process = subprocess.Popen(
        command,
        env=launch_env() if env is None else env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    chunks: dict[str, list[bytes]] = {"out": [], "err": []}
    readers = [
        threading.Thread(target=_drain, args=(stream, chunks[name]), daemon=True)
        for name, stream in (("out", process.stdout), ("err", process.stderr))
    ]
    for reader in readers:
        reader.start()
    hung = _watch(process, chunks)
    for reader in readers:
        reader.join()
    out, err = (b"".join(chunks[name]).decode("utf-8", "replace") for name in ("out", "err"))
    if hung:
        err += f"\n[launching] no output and no CPU time for {HANG_SECONDS}s (or over {LAUNCH_CAP}s): killed as hung\n"
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def _drain(stream: IO[bytes] | None, into: list[bytes]) -> None:
    assert stream is not None
    while chunk := stream.read1(1 << 16):  # type: ignore[attr-defined]
        into.append(chunk)


def _watch(process: subprocess.Popen[bytes], chunks: dict[str, list[bytes]]) -> bool:
    """Wait for ``process``; kill its process group and return True when it stops making progress."""
    started = last_progress = time.monotonic()
    last_mark: tuple[int, int] | None = None
    while process.poll() is None:
        time.sleep(1.0)
        mark = (
            sum(len(c) for c in chunks["out"]) + sum(len(c) for c in chunks["err"]),
            _session_cpu_ticks(process.pid),
        )
        now = time.monotonic()
        if mark != last_mark:
            last_mark, last_progress = mark, now
        if now - last_progress > HANG_SECONDS or now - started > LAUNCH_CAP:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return True
    return False


def _session_cpu_ticks(session: int) -> int:
    """CPU time (clock ticks) used so far by the processes of ``session`` (Linux ``/proc``; 0 elsewhere)."""
    total = 0
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # field 6 of stat: the session id
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total
