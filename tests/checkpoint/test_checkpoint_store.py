"""checkpoint_store: atomic writes, verification, listing and rotation, under injected faults and kills.

Faults are injected by monkeypatching (``os.fsync``, ``os.replace``, ``os.mkdir``, ``json.dump``), by a
real ``RLIMIT_FSIZE`` in a child process, and by SIGKILL in a child process at chosen points. The
children load ``checkpoint/store.py`` and ``checkpoint/files.py`` by file path (they import only the
standard library), so they
start in milliseconds instead of importing torch.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statetrain.checkpoint import store as cs
from statetrain.checkpoint.store import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    CheckpointError,
    CheckpointWarning,
    CheckpointWriteError,
    clean_stale,
    latest_good_checkpoint,
    list_checkpoints,
    rotate_checkpoints,
    verify_checkpoint,
    write_checkpoint,
)

MODULE_FILE = Path(cs.__file__).resolve()
FILES_FILE = MODULE_FILE.with_name("files.py")


def files_for(step: int) -> dict[str, bytes]:
    return {
        "model.safetensors": bytes(range(256)) * 4 + step.to_bytes(4, "little"),
        "trainer_state.json": json.dumps({"global_step": step}).encode(),
        "rng/state.json": b'{"python": [1, 2, 3]}',
        "rng/deeper/cuda.json": b"[]",
    }


def writer(files: dict[str, bytes]) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        for rel, data in files.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(data)

    return write


def save(out: Path, step: int) -> Path:
    return write_checkpoint(out, f"checkpoint-{step}", writer(files_for(step)), {"global_step": step})


def scratch(out: Path) -> list[str]:
    """Folders this module leaves beside checkpoints while working (must be none once it is done)."""
    return sorted(p.name for p in out.iterdir() if p.name.startswith((".tmp-", ".old-", ".trash-")))


def assert_all_listed_verify(out: Path) -> None:
    for path in list_checkpoints(out):
        verify_checkpoint(path)


# --- round trip ------------------------------------------------------------------------------------


def test_round_trip_manifest_lists_every_file(tmp_path: Path) -> None:
    out = tmp_path / "out"  # created by the write
    path = save(out, 7)
    assert path == out / "checkpoint-7"
    manifest = verify_checkpoint(path)
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["metadata"] == {"global_step": 7}
    expected = {
        rel: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for rel, data in files_for(7).items()
    }
    assert manifest["files"] == expected
    assert (path / "rng" / "deeper" / "cuda.json").read_bytes() == b"[]"
    assert scratch(out) == []
    assert list_checkpoints(out) == [path]
    assert latest_good_checkpoint(out) == path


def test_resaving_the_same_step_replaces_it_completely(tmp_path: Path) -> None:
    save(tmp_path, 1)
    first = save(tmp_path, 3)
    second = write_checkpoint(tmp_path, "checkpoint-3", writer({"only.json": b"{}"}), {"again": True})
    assert first == second
    manifest = verify_checkpoint(second)
    assert manifest["metadata"] == {"again": True}
    assert sorted(manifest["files"]) == ["only.json"]
    assert not (second / "model.safetensors").exists()
    assert scratch(tmp_path) == []
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-1", "checkpoint-3"]


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "a/b", ".tmp-checkpoint-1-0123456789abcdef"])
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="plain, non-hidden folder name"):
        write_checkpoint(tmp_path, name, writer({}), {})


def test_writer_may_not_write_the_manifest_or_links(tmp_path: Path) -> None:
    save(tmp_path, 1)
    with pytest.raises(CheckpointWriteError, match=re.escape(MANIFEST_NAME)):
        write_checkpoint(tmp_path, "checkpoint-2", writer({MANIFEST_NAME: b"{}"}), {})

    def with_link(folder: Path) -> None:
        (folder / "link").symlink_to("/etc/hostname")

    with pytest.raises(CheckpointWriteError, match="not regular: link"):
        write_checkpoint(tmp_path, "checkpoint-2", with_link, {})
    with pytest.raises(CheckpointWriteError, match="not JSON serializable"):
        write_checkpoint(tmp_path, "checkpoint-2", writer({}), {"bad": object()})
    assert scratch(tmp_path) == []
    assert list_checkpoints(tmp_path) == [tmp_path / "checkpoint-1"]


# --- write failures --------------------------------------------------------------------------------


def test_writer_exception_leaves_nothing_and_names_path_and_cause(tmp_path: Path) -> None:
    earlier = save(tmp_path, 1)

    def broken(folder: Path) -> None:
        (folder / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("serializer exploded")

    with pytest.raises(CheckpointWriteError) as info:
        write_checkpoint(tmp_path, "checkpoint-2", broken, {})
    message = str(info.value)
    assert str(tmp_path / "checkpoint-2") in message
    assert "RuntimeError: serializer exploded" in message
    assert "nothing was left behind" in message
    assert isinstance(info.value, OSError)
    assert info.value.errno is None
    assert info.value.target == tmp_path / "checkpoint-2"
    assert isinstance(info.value.__cause__, RuntimeError)
    assert scratch(tmp_path) == []
    assert list_checkpoints(tmp_path) == [earlier]
    verify_checkpoint(earlier)


def test_a_temporary_folder_that_cannot_be_removed_is_named_and_cleaned_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "rmtree", _enospc)  # rmtree itself fails (e.g. EBUSY on a network FS)
    with pytest.raises(CheckpointWriteError, match="could not be removed") as info:
        write_checkpoint(tmp_path, "checkpoint-1", writer({"a": b"a"}), {"bad": {1, 2}})
    monkeypatch.undo()
    assert "TypeError" in str(info.value)
    assert len(scratch(tmp_path)) == 1
    save(tmp_path, 2)
    assert scratch(tmp_path) == []
    with pytest.raises(TypeError, match="metadata must be a dict"):
        write_checkpoint(tmp_path, "checkpoint-3", writer({}), [1, 2])  # type: ignore[arg-type]


def test_keyboard_interrupt_in_writer_propagates_and_cleans_up(tmp_path: Path) -> None:
    def interrupted(folder: Path) -> None:
        (folder / "x").write_bytes(b"x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(tmp_path, "checkpoint-1", interrupted, {})
    assert list(tmp_path.iterdir()) == []


def _enospc(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("fault", ["writer", "manifest", "fsync", "mkdir", "rename"])
def test_os_errors_at_each_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    earlier = save(tmp_path, 1)
    code = errno.ENOSPC
    write = writer(files_for(2))
    if fault == "writer":  # disk full while the engine writes a tensor file

        def write(folder: Path) -> None:
            (folder / "model.safetensors").write_bytes(b"partial")
            _enospc()

    elif fault == "manifest":
        monkeypatch.setattr(json, "dump", _enospc)
    elif fault == "fsync":
        monkeypatch.setattr(os, "fsync", _enospc)
    elif fault == "mkdir":
        code = errno.EACCES
        monkeypatch.setattr(os, "mkdir", lambda *a, **k: (_ for _ in ()).throw(PermissionError(code, "denied")))
    else:  # the final rename, e.g. a cross-device rename
        code = errno.EXDEV
        monkeypatch.setattr(os, "replace", lambda *a, **k: (_ for _ in ()).throw(OSError(code, "cross-device")))
    with pytest.raises(CheckpointWriteError) as info:
        write_checkpoint(tmp_path, "checkpoint-2", write, {})
    monkeypatch.undo()
    assert info.value.errno == code
    assert str(tmp_path / "checkpoint-2") in str(info.value)
    assert f"[Errno {code}]" in str(info.value)
    assert scratch(tmp_path) == []
    assert list_checkpoints(tmp_path) == [earlier]
    verify_checkpoint(earlier)


def test_failed_rename_while_replacing_puts_the_old_copy_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = save(tmp_path, 4)
    before = verify_checkpoint(old)
    real_replace = os.replace

    def replace(src: str | Path, dst: str | Path) -> None:
        if Path(src).name.startswith(".tmp-"):
            raise OSError(errno.EIO, "I/O error")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(CheckpointWriteError, match="renaming the checkpoint into place"):
        write_checkpoint(tmp_path, "checkpoint-4", writer({"new": b"new"}), {"new": True})
    monkeypatch.undo()
    assert verify_checkpoint(old) == before
    assert scratch(tmp_path) == []


def test_failed_fsync_of_output_dir_after_rename_says_the_checkpoint_is_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out_inode = os.stat(tmp_path).st_ino
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.fstat(fd).st_ino == out_inode:
            raise OSError(errno.EIO, "I/O error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(CheckpointWriteError, match="in place but may not survive a power loss") as info:
        save(tmp_path, 1)
    monkeypatch.undo()
    assert info.value.errno == errno.EIO
    verify_checkpoint(tmp_path / "checkpoint-1")
    assert scratch(tmp_path) == []


def _run_child(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    prelude = textwrap.dedent(
        f"""
        import importlib.util, json, os, shutil, signal, sys
        from pathlib import Path
        files_spec = importlib.util.spec_from_file_location("statetrain.checkpoint.files", {str(FILES_FILE)!r})
        sys.modules["statetrain.checkpoint.files"] = importlib.util.module_from_spec(files_spec)
        files_spec.loader.exec_module(sys.modules["statetrain.checkpoint.files"])
        spec = importlib.util.spec_from_file_location("checkpoint_store", {str(MODULE_FILE)!r})
        cs = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(cs)
        """
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_real_file_size_limit_fails_cleanly(tmp_path: Path) -> None:
    earlier = save(tmp_path, 1)
    child = _run_child(
        """
        import resource
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        def write(folder):
            (folder / "model.safetensors").write_bytes(b"\\0" * 65536)
        try:
            cs.write_checkpoint(Path(sys.argv[1]), "checkpoint-2", write, {})
        except cs.CheckpointWriteError as exc:
            print(json.dumps({"errno": exc.errno, "message": str(exc)}))
        """,
        str(tmp_path),
    )
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout)
    assert report["errno"] == errno.EFBIG
    assert str(tmp_path / "checkpoint-2") in report["message"]
    assert os.strerror(errno.EFBIG) in report["message"]
    assert scratch(tmp_path) == []
    assert list_checkpoints(tmp_path) == [earlier]
    verify_checkpoint(earlier)


def test_output_dir_under_a_regular_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    target = tmp_path / "afile" / "out" / "checkpoint-1"
    with pytest.raises(CheckpointWriteError) as info:
        write_checkpoint(target.parent, target.name, writer({}), {})
    assert info.value.errno == errno.ENOTDIR
    assert str(target) in str(info.value)
    assert "preparing the output folder" in str(info.value)
    assert "earlier checkpoints are untouched" in str(info.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_output_dir_is_a_clear_error(tmp_path: Path) -> None:
    earlier = save(tmp_path, 1)
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(CheckpointWriteError) as info:
            save(tmp_path, 2)
    finally:
        tmp_path.chmod(0o700)
    assert info.value.errno == errno.EACCES
    assert str(tmp_path / "checkpoint-2") in str(info.value)
    assert list_checkpoints(tmp_path) == [earlier]
    verify_checkpoint(earlier)


# --- SIGKILL at chosen points ----------------------------------------------------------------------

_KILL_CHILD = """
out, point = Path(sys.argv[1]), sys.argv[2]
def die():
    os.kill(os.getpid(), signal.SIGKILL)
real_replace = os.replace
def replace(src, dst):
    s, d = Path(src).name, Path(dst).name
    if point == "before_rename" and s.startswith(".tmp-"):
        die()
    real_replace(src, dst)
    if (point == "after_rename" and s.startswith(".tmp-")) or (point.startswith("replace_") and (
            (point == "replace_aside" and d.startswith(".old-")) or (point == "replace_in" and s.startswith(".tmp-")))
    ) or (point == "rotation_trash" and d.startswith(".trash-")):
        die()
os.replace = replace
real_rmtree = shutil.rmtree
def rmtree(path, *a, **k):
    if point == "rotation_rmtree":
        os.unlink(Path(path) / "statetrain_manifest.json")
        die()
    real_rmtree(path, *a, **k)
shutil.rmtree = rmtree
real_fsync = os.fsync
def fsync(fd):
    if point == "before_parent_fsync" and os.fstat(fd).st_ino == os.stat(out).st_ino:
        die()  # checkpoint-3 is complete, fsynced and renamed in; output_dir's own fsync is next
    real_fsync(fd)
os.fsync = fsync
files = {"model.safetensors": b"m" * 5000, "sub/a.json": b"{}", "sub/b.json": b"[]"}
def write(folder):
    for index, (rel, data) in enumerate(files.items()):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
        if point == f"file:{index}":
            die()
if point.startswith("rotation"):
    cs.rotate_checkpoints(out, 1, [])
elif point.startswith("replace_"):
    cs.write_checkpoint(out, "checkpoint-2", write, {"resaved": True})
else:
    cs.write_checkpoint(out, "checkpoint-3", write, {})
print("not killed")
"""

# point → (latest good checkpoint right after the kill, after the next write + its cleanup)
KILL_POINTS = {
    "file:0": ("checkpoint-2", "checkpoint-2"),
    "file:1": ("checkpoint-2", "checkpoint-2"),
    "file:2": ("checkpoint-2", "checkpoint-2"),
    "before_rename": ("checkpoint-2", "checkpoint-2"),
    "before_parent_fsync": ("checkpoint-3", "checkpoint-3"),
    "after_rename": ("checkpoint-3", "checkpoint-3"),
    "replace_aside": ("checkpoint-1", "checkpoint-2"),  # inside the replace window: restored by the next write
    "replace_in": ("checkpoint-2", "checkpoint-2"),
    "rotation_trash": ("checkpoint-2", "checkpoint-2"),
    "rotation_rmtree": ("checkpoint-2", "checkpoint-2"),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_never_exposes_a_partial_checkpoint(tmp_path: Path, point: str) -> None:
    save(tmp_path, 1)
    save(tmp_path, 2)
    child = _run_child(_KILL_CHILD, str(tmp_path), point)
    assert child.returncode == -signal.SIGKILL, (child.returncode, child.stdout, child.stderr)
    right_after, after_next_write = KILL_POINTS[point]

    assert_all_listed_verify(tmp_path)  # no partial checkpoint under a real name, ever
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to skip: every listed checkpoint is complete
        assert latest_good_checkpoint(tmp_path) == tmp_path / right_after
    if point.startswith("rotation"):
        assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2"]
    if point.startswith("file") or point == "before_rename":
        assert scratch(tmp_path), "the killed write should have left its temporary folder"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save(tmp_path, 10)
    assert scratch(tmp_path) == []
    assert_all_listed_verify(tmp_path)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert after_next_write in names
    if point == "replace_aside":
        assert any("restored" in str(w.message) and "checkpoint-2" in str(w.message) for w in caught)
        assert verify_checkpoint(tmp_path / "checkpoint-2")["metadata"] == {"global_step": 2}
    if point == "replace_in":
        assert verify_checkpoint(tmp_path / "checkpoint-2")["metadata"] == {"resaved": True}


def test_clean_stale_touches_only_its_own_pattern(tmp_path: Path) -> None:
    keep = [".tmp-user-notes", ".tmpfoo", "tmp-checkpoint-1-0123456789abcdef", ".trash-x-0123", "checkpoint-x"]
    for name in keep:
        (tmp_path / name).mkdir()
    stale = tmp_path / ".tmp-checkpoint-1-0123456789abcdef"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "f").write_bytes(b"x")
    (tmp_path / ".trash-checkpoint-0-fedcba9876543210").mkdir()
    clean_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


# --- verification ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rel", sorted(files_for(2)))
def test_a_flipped_byte_is_named_and_skipped(tmp_path: Path, rel: str) -> None:
    older = save(tmp_path, 1)
    newest = save(tmp_path, 2)
    target = newest / rel
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=re.escape(f"{rel}: checksum mismatch")):
        verify_checkpoint(newest)
    with pytest.warns(
        CheckpointWarning,
        match=re.escape(f"skipping checkpoint {newest}") + ".*" + re.escape(f"{rel}: checksum mismatch"),
    ):
        assert latest_good_checkpoint(tmp_path) == older


def test_a_flipped_byte_in_the_manifest_is_refused(tmp_path: Path) -> None:
    newest = save(tmp_path, 2)
    manifest = newest / MANIFEST_NAME
    text = manifest.read_text()
    sha = hashlib.sha256(files_for(2)["model.safetensors"]).hexdigest()
    manifest.write_text(text.replace(sha, ("0" if sha[0] != "0" else "1") + sha[1:]))
    with pytest.raises(CheckpointError, match=re.escape("does not match its own checksum (manifest_sha256)")):
        verify_checkpoint(newest)
    manifest.write_text(text[:-5])
    with pytest.raises(CheckpointError, match=re.escape(f"{MANIFEST_NAME} is malformed")):
        verify_checkpoint(newest)


def test_missing_extra_and_resized_files_are_named(tmp_path: Path) -> None:
    path = save(tmp_path, 2)
    (path / "rng" / "state.json").unlink()
    (path / "stray.bin").write_bytes(b"?")
    (path / "model.safetensors").write_bytes(b"short")
    with pytest.raises(CheckpointError) as info:
        verify_checkpoint(path)
    message = str(info.value)
    assert "rng/state.json: missing" in message
    assert "stray.bin: extra file not in the manifest" in message
    assert "model.safetensors: size mismatch" in message


def test_missing_manifest_means_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint-5"
    path.mkdir()
    (path / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(CheckpointError, match=re.escape(f"incomplete: it has no {MANIFEST_NAME}")):
        verify_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        verify_checkpoint(tmp_path / "checkpoint-6")


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        (FORMAT_VERSION + 1, f"format_version {FORMAT_VERSION + 1}: written by a newer statetrain"),
        (0, "unknown format_version 0"),
        ("1", "malformed: format_version must be an integer"),
    ],
)
def test_unknown_format_version_is_refused(tmp_path: Path, version: object, expected: str) -> None:
    path = save(tmp_path, 3)
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    manifest["format_version"] = version
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=re.escape(expected)):
        verify_checkpoint(path)


def test_a_version_1_manifest_still_verifies_and_a_version_2_one_needs_its_own_checksum(tmp_path: Path) -> None:
    """Checkpoints written before manifests checksummed themselves stay readable; newer ones may not drop it."""
    path = save(tmp_path, 3)
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    assert manifest["format_version"] == 2 and "manifest_sha256" in manifest
    del manifest["manifest_sha256"]
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"'manifest_sha256'.* is missing"):
        verify_checkpoint(path)
    manifest["format_version"] = 1
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert verify_checkpoint(path)["metadata"] == {"global_step": 3}


@pytest.mark.parametrize(
    "broken",
    [[1, 2], {"format_version": 1, "metadata": {}, "files": []}, {"format_version": 1, "files": {}}],
)
def test_malformed_manifest_is_refused(tmp_path: Path, broken: object) -> None:
    path = save(tmp_path, 3)
    (path / MANIFEST_NAME).write_text(json.dumps(broken))
    with pytest.raises(CheckpointError, match="is malformed"):
        verify_checkpoint(path)


def test_manifest_paths_escaping_the_folder_are_malformed(tmp_path: Path) -> None:
    path = save(tmp_path, 3)
    manifest = json.loads((path / MANIFEST_NAME).read_text())
    manifest["files"]["../../etc/hostname"] = {"size": 1, "sha256": "0" * 64}
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=re.escape("invalid file path '../../etc/hostname'")):
        verify_checkpoint(path)


@pytest.mark.parametrize("files", [["trainer_state.json", "optimizer.pt"], ["trainer_state.json"], ["rng_state_3.pth"]])
def test_hugging_face_checkpoints_are_refused(tmp_path: Path, files: list[str]) -> None:
    older = save(tmp_path, 1)
    hf = tmp_path / "checkpoint-9"
    hf.mkdir()
    for name in [*files, "model.safetensors"]:
        (hf / name).write_bytes(b"\x80\x04dummy")
    with pytest.raises(CheckpointError, match=r"Hugging Face Trainer checkpoint.*pickles") as info:
        verify_checkpoint(hf)
    assert all(name in str(info.value) for name in files)
    with pytest.warns(CheckpointWarning, match="checkpoint-9.*Hugging Face"):
        assert latest_good_checkpoint(tmp_path) == older


# --- listing ---------------------------------------------------------------------------------------


def test_listing_sorts_by_step_and_ignores_everything_else(tmp_path: Path) -> None:
    for step in (10, 9, 100, 2):
        (tmp_path / f"checkpoint-{step}").mkdir()
    for name in ("checkpoint-x", "checkpoint-", "checkpoint-3-old", ".tmp-checkpoint-50-0123456789abcdef", "other"):
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint-7").write_text("a file, not a folder")
    assert [p.name for p in list_checkpoints(tmp_path)] == [f"checkpoint-{s}" for s in (2, 9, 10, 100)]
    assert list_checkpoints(tmp_path / "missing") == []
    assert latest_good_checkpoint(tmp_path / "missing") is None


def test_latest_good_is_none_when_nothing_verifies(tmp_path: Path) -> None:
    (tmp_path / "checkpoint-1").mkdir()
    with pytest.warns(CheckpointWarning, match="checkpoint-1 is incomplete"):
        assert latest_good_checkpoint(tmp_path) is None


# --- rotation --------------------------------------------------------------------------------------


def test_rotation_keeps_best_and_newest(tmp_path: Path) -> None:
    for step in range(1, 6):
        save(tmp_path, step)
    best = tmp_path / "checkpoint-2"
    deleted = rotate_checkpoints(tmp_path, 2, [best])
    assert [p.name for p in deleted] == ["checkpoint-1", "checkpoint-3", "checkpoint-4"]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-5"]
    assert scratch(tmp_path) == []
    # limit 1 with a distinct best keeps both (as HF does); a relative best path works too
    save(tmp_path, 6)
    rotate_checkpoints(tmp_path, 1, [Path(os.path.relpath(best))])
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-6"]


def test_rotation_orders_by_step_not_mtime(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        (tmp_path / f"checkpoint-{step}").mkdir()
        os.utime(tmp_path / f"checkpoint-{step}", (1e9 - step * 1000, 1e9 - step * 1000))  # newest step is oldest
    rotate_checkpoints(tmp_path, 1, [])
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-3"]


def reference_remaining(steps: list[int], limit: int | None, best: int | None) -> set[int]:
    """Independent statement of the rule: keep newest + best, then fill up to the limit with the newest others."""
    if limit is None or limit <= 0 or not steps:
        return set(steps)
    ordered = sorted(steps, reverse=True)
    kept = {ordered[0]} | ({best} if best is not None else set())
    budget = max(limit, len(kept)) - len(kept)
    for step in ordered:
        if budget == 0:
            break
        if step not in kept:
            kept.add(step)
            budget -= 1
    return kept


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(st.integers(0, 10_000), min_size=1, max_size=8, unique=True),
    limit=st.one_of(st.none(), st.integers(0, 5)),
    best_index=st.one_of(st.none(), st.integers(0, 7)),
)
def test_rotation_matches_reference(steps: list[int], limit: int | None, best_index: int | None) -> None:
    best = steps[best_index] if best_index is not None and best_index < len(steps) else None
    with tempfile.TemporaryDirectory() as root:
        out = Path(root)
        for step in steps:
            (out / f"checkpoint-{step}").mkdir()
        protected = [out / f"checkpoint-{best}"] if best is not None else []
        deleted = rotate_checkpoints(out, limit, protected)
        remaining = {int(p.name.split("-")[1]) for p in list_checkpoints(out)}
        assert remaining == reference_remaining(steps, limit, best)
        assert {int(p.name.split("-")[1]) for p in deleted} == set(steps) - remaining
        assert sorted(p.name for p in out.iterdir()) == sorted(f"checkpoint-{s}" for s in remaining)
