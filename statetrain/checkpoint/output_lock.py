"""One training run per ``output_dir``: an exclusive OS lock on ``output_dir/.statetrain.lock``.

Two runs writing checkpoints into one folder (a job submitted twice) remove each other's temporary
folders and rotate each other's checkpoints. :class:`OutputDirLock` takes ``flock(LOCK_EX | LOCK_NB)``
on a lock file for the whole ``train()``: the kernel drops the lock when its process ends in any way
(SIGKILL and OOM kill included), so there is never a stale lock to delete by hand. The file holds the
holder's pid, host and run token, read only to word the refusal. The holder removes it when
``train()`` returns, still holding the lock, so a finished run leaves ``output_dir`` as transformers
does (HF-style code lists that folder); only a killed run leaves the file, which the next run takes
over. Removing a lock file is safe because a process that locked it checks, once it holds the lock,
that the name still leads to the file it locked, and starts again on the new file if not.

Several processes of one distributed run share the lock: only a process that writes checkpoints
takes it (the main process, or each node's main process with ``save_on_each_node``), and a writer
that finds it held by the same run (same token, e.g. two node mains on one shared file system)
shares it instead of failing.

Taking the lock also checks the folder before any work: an ``output_dir`` that is a file, or a
folder this process cannot write, is refused by name here rather than at the first save.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; runs are not locked there
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".statetrain.lock"
_HOLDER_CAP = 4096
_ATTEMPTS = 100


class OutputDirInUseError(RuntimeError):
    """Another training run holds ``output_dir``; the message names the folder, pid and host."""


class OutputDirError(ValueError):
    """``output_dir`` cannot hold checkpoints (a file, or not writable); the message says which."""


def check_output_dir(output_dir: Path) -> None:
    """Create ``output_dir`` if needed; refuse a file, or a folder this process cannot write into."""
    try:
        if output_dir.exists() and not output_dir.is_dir():
            raise OutputDirError(f"output_dir {str(output_dir)!r} is a file, not a folder; choose another output_dir")
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(f"output_dir {str(output_dir)!r} cannot be used: {exc}") from exc
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise OutputDirError(
            f"output_dir {str(output_dir)!r} is not writable by this process (uid {os.geteuid()}); "
            "checkpoints could not be saved there: fix its permissions or choose another output_dir"
        )


class OutputDirLock:
    """The exclusive lock of one run on ``output_dir`` (see the module docstring)."""

    def __init__(self, output_dir: Path, token: str) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_NAME
        self.token = token
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`OutputDirInUseError` at once (never waits)."""
        check_output_dir(self.output_dir)
        for _ in range(_ATTEMPTS):
            fd = self._open()
            if fcntl is None:  # pragma: no cover
                self._fd = fd
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                if holder.get("token") == self.token:
                    return  # another process of this run (a node's main on a shared file system) holds it
                raise OutputDirInUseError(
                    f"output_dir {str(self.output_dir)!r} is in use by another training run (pid "
                    f"{holder.get('pid', '?')} on host {holder.get('host', '?')}, holding {self.path}); two "
                    "runs in one folder would delete each other's checkpoints. Wait for it to end, stop it, or "
                    "choose another output_dir"
                ) from None
            except OSError:
                os.close(fd)
                raise
            if self._names(fd):
                break
            os.close(fd)  # the previous holder removed the file we opened: lock the current one
        else:  # pragma: no cover - needs runs starting and ending in the same instant, over and over
            raise OutputDirError(f"could not lock {self.path}: it was replaced {_ATTEMPTS} times in a row")
        self._fd = fd
        record = {"pid": os.getpid(), "host": socket.gethostname(), "token": self.token, "since": time.time()}
        data = json.dumps(record).encode("utf-8")
        # written, then cut to length: truncating to zero first would make ext4 flush the file when
        # it is closed (its replace-via-truncate heuristic), about 0.1 ms on every train() call
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))

    def release(self) -> None:
        """Remove the lock file while still holding it, then drop the lock (see the module docstring)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._names(fd):
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise OutputDirError(f"cannot create the lock file {self.path}: {exc}") from exc

    def _names(self, fd: int) -> bool:
        """Whether ``self.path`` still leads to the open file ``fd`` (not removed, not replaced)."""
        try:
            named, opened = os.stat(self.path), os.fstat(fd)
        except OSError:
            return False
        return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)

    @property
    def held(self) -> bool:
        return self._fd is not None


def _read_holder(fd: int) -> dict[str, Any]:
    """What the holder wrote into the lock file; ``{}`` while it is still writing it (or unreadable)."""
    try:
        data = json.loads(os.pread(fd, _HOLDER_CAP, 0).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}
