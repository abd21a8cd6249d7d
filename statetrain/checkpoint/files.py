"""Durable file operations under the checkpoint store: fsync'd writes, hashing, walking, removal.

Kept apart so the store reads as the checkpoint lifecycle (write, verify, list, rotate) while this
module holds what "durable on disk" means on POSIX file systems.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

logger = logging.getLogger("statetrain.checkpoint.store")

MANIFEST_NAME = "statetrain_manifest.json"
_CHUNK = 1 << 22
_OS_ERROR_RE = re.compile(r"os error (\d+)")


def ensure_dir(path: Path) -> None:
    if path.is_dir():
        return
    path.mkdir(parents=True, exist_ok=True)
    fsync_dir(path.parent)


def errno_of(cause: BaseException) -> int | None:
    """The errno behind ``cause``: its own, its causes', or the ``os error N`` that safetensors
    (whose Rust errors are not ``OSError``s) writes into its message."""
    seen: set[int] = set()
    current: BaseException | None = cause
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "errno", None)
        if isinstance(code, int):
            return code
        match = _OS_ERROR_RE.search(str(current))
        if match:
            return int(match.group(1))
        current = current.__cause__ or current.__context__
    return None


def fsync_dir(path: Path) -> None:
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def walk_tree(root: Path) -> tuple[dict[str, Path], list[str]]:
    """Regular files under ``root`` by relative posix path, and entries that are not files or folders."""
    files: dict[str, Path] = {}
    irregular: list[str] = []
    for folder, dirnames, filenames in os.walk(root, onerror=raise_os_error):
        base = Path(folder)
        for entry in sorted(dirnames + filenames):
            full = base / entry
            mode = os.lstat(full).st_mode
            rel = full.relative_to(root).as_posix()
            if stat.S_ISREG(mode):
                files[rel] = full
            elif not stat.S_ISDIR(mode):
                irregular.append(rel)
    return files, irregular


def raise_os_error(error: OSError) -> None:
    raise error


def hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def sync_file(path: Path, mode: int) -> None:
    """Give the file the mode ``open()`` would (safetensors makes ``0o600`` files), then fsync it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != mode and hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)


def file_mode() -> int:
    """``0o666`` less the process umask, read without changing it where the platform allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no way to read it without setting it (briefly; one writer at a time)
    os.umask(mask)
    return 0o666 & ~mask


def hash_and_sync_tree(root: Path) -> dict[str, dict[str, Any]]:
    """The manifest's ``files``: every file under ``root`` hashed, given its mode and fsynced; every folder fsynced.

    Each file's hash and its fsync are separate jobs on a small pool (hashlib and fsync release the
    GIL), so the sha256 of one file runs while the disk flushes it and the others.
    """
    files, irregular = walk_tree(root)
    if irregular:
        raise ValueError(f"checkpoints hold only regular files and folders; not regular: {', '.join(irregular)}")
    if MANIFEST_NAME in files:
        raise ValueError(f"the checkpoint writer must not create {MANIFEST_NAME}; statetrain writes it")
    mode = file_mode()
    entries: dict[str, dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=min(4, max(1, 2 * len(files)))) as pool:
        jobs = [(rel, pool.submit(hash_file, full), pool.submit(sync_file, full, mode)) for rel, full in files.items()]
        for rel, hashed, synced in jobs:
            synced.result()
            size, sha = hashed.result()
            entries[rel] = {"size": size, "sha256": sha}
    for folder, _, _ in os.walk(root, topdown=False, onerror=raise_os_error):
        if Path(folder) != root:
            fsync_dir(Path(folder))
    return entries


def remove_path(path: Path) -> bool:
    """Remove a file or folder tree; a failure is logged and returns False (the next :func:`clean_stale` retries)."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("could not remove %s: %s", path, exc)
        return False
    return True


def manifest_digest(manifest: dict[str, Any]) -> str:
    """The sha256 of the manifest without its ``manifest_sha256``, in one canonical JSON form."""
    content = {key: value for key, value in manifest.items() if key != "manifest_sha256"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()
