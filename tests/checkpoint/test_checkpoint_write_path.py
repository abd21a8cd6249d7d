"""checkpoint_store's write path: hashing hidden behind fsync, file modes, errno of safetensors failures.

The manifest semantics (sizes, sha256, verification) are covered in ``test_checkpoint_store.py``;
these tests pin what makes a save cheap and its errors and files usable.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from statetrain.checkpoint.store import CheckpointWriteError, verify_checkpoint, write_checkpoint
from statetrain.checkpoint.tensor_tree import save_tree


def write_mixed(folder: Path) -> None:
    """What a real checkpoint holds: safetensors files (model, tensor trees) and JSON files."""
    save_file({"w": torch.arange(64, dtype=torch.float32)}, str(folder / "model.safetensors"))
    save_tree({"state": {0: {"exp_avg": torch.ones(8)}}}, folder, "optimizer")
    (folder / "trainer_state.json").write_text("{}", encoding="utf-8")
    (folder / "sub").mkdir()
    (folder / "sub" / "notes.json").write_text("[]", encoding="utf-8")


@pytest.fixture
def umask() -> Iterator[Any]:
    previous = os.umask(0o022)
    os.umask(previous)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(previous)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_every_checkpoint_file_gets_the_umask_mode_safetensors_included(tmp_path: Path, umask: Any, mask: int) -> None:
    umask(mask)
    path = write_checkpoint(tmp_path, "checkpoint-1", write_mixed, {})
    modes = {str(p.relative_to(path)): stat.S_IMODE(p.stat().st_mode) for p in sorted(path.rglob("*")) if p.is_file()}
    assert "model.safetensors" in modes and "optimizer.safetensors" in modes
    assert set(modes.values()) == {0o666 & ~mask}, {k: oct(v) for k, v in modes.items()}
    verify_checkpoint(path)


def test_hashing_runs_while_the_files_are_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file's sha256 does not wait for the disk: it overlaps the fsyncs (the save benchmark's 1.3x)."""
    fsync_started = threading.Event()
    waited: list[bool] = []
    real_fsync, real_sha256 = os.fsync, hashlib.sha256

    def fsync(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            fsync_started.set()
        real_fsync(fd)

    class Sha256:
        def __init__(self, *args: Any) -> None:
            self.inner = real_sha256(*args)

        def update(self, data: Any) -> None:
            # with hash-then-fsync no regular file is being fsynced while any file is hashed
            waited.append(fsync_started.wait(timeout=3))
            self.inner.update(data)

        def hexdigest(self) -> str:
            return self.inner.hexdigest()

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(hashlib, "sha256", Sha256)
    path = write_checkpoint(tmp_path, "checkpoint-1", write_mixed, {})
    monkeypatch.undo()
    assert waited and all(waited), "a file was hashed while no file was being fsynced"
    manifest = verify_checkpoint(path)
    model = (path / "model.safetensors").read_bytes()
    assert manifest["files"]["model.safetensors"] == {
        "size": len(model),
        "sha256": hashlib.sha256(model).hexdigest(),
    }


def test_a_safetensors_error_carries_its_errno(tmp_path: Path) -> None:
    """safetensors raises SafetensorError, not OSError; its 'os error N' becomes the errno."""

    def failing(folder: Path) -> None:
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    with pytest.raises(CheckpointWriteError) as info:
        write_checkpoint(tmp_path, "checkpoint-1", failing, {})
    assert info.value.errno == errno.ENOSPC
    assert "No space left on device" in str(info.value)
    assert isinstance(info.value.__cause__, SafetensorError)


def test_an_oserror_inside_a_wrapping_exception_gives_its_errno(tmp_path: Path) -> None:
    def failing(folder: Path) -> None:
        try:
            raise PermissionError(errno.EACCES, "denied")
        except PermissionError as exc:
            raise RuntimeError("serializer failed") from exc

    with pytest.raises(CheckpointWriteError) as info:
        write_checkpoint(tmp_path, "checkpoint-1", failing, {})
    assert info.value.errno == errno.EACCES


def test_real_file_size_limit_in_safetensors_gives_efbig(tmp_path: Path) -> None:
    """A real RLIMIT_FSIZE hit inside safetensors' Rust writer: errno EFBIG, nothing left behind."""
    script = textwrap.dedent(
        """
        import json, resource, signal, sys
        from pathlib import Path
        import torch
        from safetensors.torch import save_file
        from statetrain.checkpoint import store as cs
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        def write(folder):
            save_file({"w": torch.zeros(65536)}, str(folder / "model.safetensors"))
        try:
            cs.write_checkpoint(Path(sys.argv[1]), "checkpoint-1", write, {})
        except cs.CheckpointWriteError as exc:
            print(json.dumps({"errno": exc.errno, "message": str(exc), "cause": type(exc.__cause__).__name__}))
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout)
    assert report["errno"] == errno.EFBIG, report
    assert report["cause"] == "SafetensorError"
    assert str(tmp_path / "checkpoint-1") in report["message"]
    assert sorted(os.listdir(tmp_path)) == []
