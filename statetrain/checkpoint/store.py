"""The on-disk lifecycle of checkpoint folders: atomic write, verification, listing, rotation.

A checkpoint is a folder ``output_dir/checkpoint-<global_step>`` holding whatever files the engine
writes (safetensors and JSON; never pickles) plus ``statetrain_manifest.json``: the format version,
the caller's metadata, and the size and sha256 of every other file in the folder.

Writing (:func:`write_checkpoint`) builds the folder as ``output_dir/.tmp-<name>-<token>`` (beside the
target, so on the same filesystem: no cross-device copy, no ``$TMPDIR`` to fill), hashes and fsyncs
every file and folder, writes the manifest last, then renames the folder into place and fsyncs
``output_dir``. A ``checkpoint-N`` folder therefore only ever appears complete; a kill at any point
leaves at most a ``.tmp-*`` folder, which the next write removes. Every failure (an exception from
the caller's writer, ENOSPC, EFBIG, EACCES...) removes the temporary folder, touches no earlier
checkpoint, and raises :class:`CheckpointWriteError`, whose ``errno`` is the cause's (also when
safetensors, whose errors are not ``OSError``, only names it as ``os error N`` in its message).

Hashing costs almost no wall time on a real disk: once the writer is done, every file is hashed
(sha256, read back from the page cache) in one thread while another fsyncs it, so the hash hides
behind the flush that a durable save waits for anyway. (Starting a file's fsync while the next file
is still being serialized was measured slower: the writes then compete with the flush; serializing
to bytes with ``safetensors.torch.save`` to hash them on the way was several times slower than
``save_file``.) Every file gets the mode a plain ``open()`` gives (``0o666`` less the umask):
safetensors creates its files ``0o600``, which would leave a checkpoint half readable by whoever
reads its JSON files.

Replacing a folder of the same name (re-saving a step) renames the old one aside to
``.old-<name>-<token>``, renames the new one in, then discards the old one. POSIX cannot swap two
non-empty folders with ``rename`` alone, so between those two renames (two metadata operations,
microseconds) ``output_dir/<name>`` does not exist. Nothing is lost in that window: both the old
and the new folder are complete on disk, and the next write (or an explicit :func:`clean_stale`)
puts the ``.old-`` copy back under ``<name>`` when ``<name>`` is missing. An ``.old-`` folder is
renamed to ``.trash-`` before it is deleted, so a restored ``.old-`` folder is never half deleted.

Reading: :func:`verify_checkpoint` checks the manifest against the files and raises
:class:`CheckpointError` saying why a folder is not a loadable checkpoint, including Hugging Face
Trainer folders, which statetrain refuses because their files are pickles. Reading is total: the
manifest carries the sha256 of its own content (``manifest_sha256``), so a flipped bit in its
metadata is reported as corruption, not as a changed run; it is read with a size cap
(:data:`MANIFEST_CAP`), integers of more than 20 digits and nesting too deep for the parser are
refused naming the file, and a caller may name files its format requires (``required``) so that a
checkpoint whose manifest vouches for less is refused too.
:func:`latest_good_checkpoint` returns the newest folder that verifies and reports each newer one it
skips with :func:`warnings.warn` (category :class:`CheckpointWarning`): a skipped checkpoint changes
where a run resumes, so it is reported through warnings, which a user can turn into errors
(``warnings.simplefilter("error", CheckpointWarning)``); housekeeping (stale folders removed) goes to
``logging`` at INFO.

Rotation (:func:`rotate_checkpoints`) sorts by step, never by mtime, keeps the newest and the
protected folders, and deletes by renaming to ``.trash-*`` first, so a kill mid-deletion never leaves
a half-deleted ``checkpoint-N`` in the listing.

One writer per ``output_dir`` at a time (the main process): a new write removes every ``.tmp-*``,
``.trash-*`` and surplus ``.old-*`` folder it finds there, assuming it was left by a killed process.
Durability relies on POSIX ``fsync`` of files and folders (on Windows folders cannot be fsynced and
that step is skipped).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from statetrain.checkpoint.errors import CheckpointError, CheckpointWarning, CheckpointWriteError
from statetrain.checkpoint.files import (
    MANIFEST_NAME,
    ensure_dir,
    errno_of,
    fsync_dir,
    hash_and_sync_tree,
    hash_file,
    manifest_digest,
    remove_path,
    walk_tree,
)

logger = logging.getLogger(__name__)

PREFIX = "checkpoint"
FORMAT_VERSION = 2
"""2 adds ``manifest_sha256``; version-1 manifests (statetrain before it) are still read, without it."""
READABLE_VERSIONS = (1, 2)
MANIFEST_CAP = 16 << 20
"""The largest manifest read (bytes): about 100,000 file entries; anything larger is refused unread."""
MAX_INT_DIGITS = 20
"""JSON integers in checkpoint files fit 64 bits; longer ones are refused before Python parses them."""

_CHECKPOINT_RE = re.compile(rf"^{PREFIX}-(\d+)$")
# Folders this module leaves beside checkpoints: .tmp- (being written), .old- (set aside while a
# same-name checkpoint is replaced), .trash- (being deleted). The token is secrets.token_hex(8).
_SCRATCH_RE = re.compile(r"^\.(tmp|old|trash)-(.+)-([0-9a-f]{16})$")
SCRATCH_PATTERNS = (".tmp-*", ".old-*", ".trash-*")  # the same folders as globs (kept off the Hub)
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# Files only a Hugging Face Trainer checkpoint has (statetrain never writes pickles); trainer_state.json
# without statetrain's engine_state.json is one too.
_HF_PICKLES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth", "training_args.bin")
_HF_STATE, _ENGINE_STATE = "trainer_state.json", "engine_state.json"


# --- write -----------------------------------------------------------------------------------------


Required = Callable[[dict[str, Any]], Iterable[str | tuple[str, ...]]]
"""The files a checkpoint must hold, from its metadata; a tuple names alternatives (one must be there)."""


def write_checkpoint(
    output_dir: Path,
    name: str,
    write_files: Callable[[Path], None],
    metadata: dict[str, Any],
    required: Required | None = None,
) -> Path:
    """Write ``output_dir/name`` atomically: ``write_files(folder)`` fills a temporary folder, then it is committed.

    ``metadata`` must be JSON-serializable; it is stored as given in the manifest. A folder lacking
    one of ``required(metadata)`` is never committed. Returns the checkpoint path. Raises
    :class:`CheckpointWriteError` on any failure (see the module docstring) and ``ValueError`` when
    ``name`` is not a plain, non-hidden folder name.
    """
    _check_name(name)
    if not isinstance(metadata, dict):
        raise TypeError(f"checkpoint metadata must be a dict, got {type(metadata).__name__}")
    output_dir = Path(output_dir)
    target = output_dir / name
    tmp: Path | None = None
    aside: Path | None = None
    committed = False
    stage = "preparing the output folder"
    try:
        ensure_dir(output_dir)
        clean_stale(output_dir)
        stage = "creating the temporary folder"
        candidate = output_dir / f".tmp-{name}-{secrets.token_hex(8)}"
        os.mkdir(candidate)
        tmp = candidate
        stage = "writing the checkpoint files"
        write_files(tmp)
        stage = "hashing and syncing the checkpoint files"
        files = hash_and_sync_tree(tmp)
        _check_required(files, metadata, required)
        stage = "writing the manifest"
        manifest: dict[str, Any] = {"format_version": FORMAT_VERSION, "metadata": metadata, "files": files}
        manifest["manifest_sha256"] = manifest_digest(manifest)
        with open(tmp / MANIFEST_NAME, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        fsync_dir(tmp)
        if os.path.lexists(target):
            stage = "moving the existing checkpoint of that name aside"
            aside = output_dir / f".old-{name}-{secrets.token_hex(8)}"
            os.replace(target, aside)
        stage = "renaming the checkpoint into place"
        try:
            os.replace(tmp, target)
        except BaseException:
            if aside is not None:
                _put_back(aside, target)
            raise
        tmp, committed = None, True
        stage = "syncing the output folder"
        fsync_dir(output_dir)
    except Exception as exc:
        if committed:
            outcome = "the checkpoint is in place but may not survive a power loss"
        elif tmp is None or remove_path(tmp):
            outcome = "nothing was left behind and earlier checkpoints are untouched"
        else:
            outcome = f"earlier checkpoints are untouched; {tmp.name} could not be removed (the next write will)"
        raise _write_error(target, stage, exc, outcome) from exc
    except BaseException:
        if tmp is not None:
            remove_path(tmp)
        raise
    if aside is not None:
        try:
            _discard(aside, output_dir)
        except OSError as exc:  # the new checkpoint is committed; the next write removes the old copy
            logger.warning("could not remove the replaced copy %s: %s", aside, exc)
    return target


def clean_stale(output_dir: Path) -> None:
    """Tidy what a killed write, replace or rotation left in ``output_dir``.

    Restores an ``.old-<name>-*`` folder as ``<name>`` when ``<name>`` is missing (a kill inside the
    replace window), then removes the other ``.tmp-*``, ``.old-*`` and ``.trash-*`` folders. Only
    names matching this module's pattern are touched. Called at the start of every write; a resume
    path may call it before :func:`latest_good_checkpoint`. Failures to remove are logged, not raised.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return
    scratch = sorted(
        (match.group(1), match.group(2), entry)
        for entry in output_dir.iterdir()
        if (match := _SCRATCH_RE.match(entry.name))
    )
    for kind, name, entry in scratch:
        if kind == "old" and not os.path.lexists(output_dir / name):
            try:
                os.replace(entry, output_dir / name)
            except OSError as exc:
                logger.warning("could not restore %s as %s: %s", entry, output_dir / name, exc)
                continue
            warnings.warn(
                f"restored {output_dir / name} from {entry.name}: a previous run was killed while replacing it",
                CheckpointWarning,
                stacklevel=2,
            )
            continue
        logger.info("removing %s, left by an interrupted checkpoint write or deletion", entry)
        remove_path(entry)


# --- read ------------------------------------------------------------------------------------------


def verify_checkpoint(path: Path, required: Required | None = None) -> dict[str, Any]:
    """Return the manifest of the checkpoint at ``path`` after checking every file against it.

    Raises :class:`CheckpointError` naming the reason: not a folder, no manifest (an incomplete
    write, or a Hugging Face Trainer checkpoint), a malformed or oversized manifest, one whose own
    checksum fails, a format_version this statetrain does not read, files missing, extra, of the
    wrong size or with the wrong sha256, or a file of ``required(metadata)`` the manifest lacks.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint: {'not a folder' if path.exists() else 'it does not exist'}")
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        try:
            names = os.listdir(path)
        except OSError as exc:
            raise CheckpointError(f"{path} cannot be listed: {exc}") from exc
        hf = sorted(n for n in names if n in _HF_PICKLES or re.match(r"^rng_state_\d+\.pth$", n))
        if _HF_STATE in names and _ENGINE_STATE not in names:
            hf = sorted([*hf, _HF_STATE])
        if hf:
            raise CheckpointError(
                f"{path} is a Hugging Face Trainer checkpoint (it has {', '.join(hf)} and no {MANIFEST_NAME}); "
                "statetrain does not load it because its optimizer, scheduler, RNG and training-args files are "
                "pickles, which can run arbitrary code when loaded. Convert it once with "
                f"`statetrain import-hf-checkpoint {path} NEW_FOLDER` (torch.load(weights_only=True) only) "
                "and resume from NEW_FOLDER"
            )
        raise CheckpointError(f"{path} is incomplete: it has no {MANIFEST_NAME} (the write did not finish)")
    manifest = read_json(manifest_path, MANIFEST_CAP)
    expected = _check_manifest(manifest_path, manifest)
    _check_required(manifest["files"], manifest["metadata"], required, path)
    try:
        actual, irregular = walk_tree(path)
    except OSError as exc:
        raise CheckpointError(f"{path} cannot be listed: {exc}") from exc
    actual.pop(MANIFEST_NAME, None)
    problems = [f"{rel}: not a regular file" for rel in irregular]
    problems += [f"{rel}: missing" for rel in sorted(expected.keys() - actual.keys())]
    problems += [f"{rel}: extra file not in the manifest" for rel in sorted(actual.keys() - expected.keys())]
    for rel in sorted(expected.keys() & actual.keys()):
        want_size, want_sha = expected[rel]
        try:
            size = os.stat(actual[rel]).st_size
            if size != want_size:
                problems.append(f"{rel}: size mismatch (manifest {want_size} bytes, found {size})")
                continue
            size, sha = hash_file(actual[rel])
        except OSError as exc:
            problems.append(f"{rel}: cannot be read ({exc})")
            continue
        if size != want_size:
            problems.append(f"{rel}: size mismatch (manifest {want_size} bytes, found {size})")
        elif sha != want_sha:
            problems.append(f"{rel}: checksum mismatch (manifest sha256 {want_sha[:12]}…, found {sha[:12]}…)")
    if problems:
        raise CheckpointError(f"{path} is corrupt: " + "; ".join(problems))
    return manifest


def read_json(path: Path, cap: int) -> Any:
    """Parse the JSON file ``path`` of at most ``cap`` bytes; every failure is a :class:`CheckpointError` naming it.

    Integers longer than :data:`MAX_INT_DIGITS` digits and nesting deeper than the parser's recursion
    limit are refused (Python would raise a bare ``ValueError`` or ``RecursionError``).
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(cap + 1)
    except OSError as exc:
        raise CheckpointError(f"{path} cannot be read: {exc}") from exc
    if len(data) > cap:
        raise CheckpointError(f"{path} is malformed: larger than the {cap} bytes the format allows")
    try:
        return json.loads(data.decode("utf-8"), parse_int=_bounded_int)
    except RecursionError:
        raise CheckpointError(f"{path} is malformed: JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an oversized integer
        raise CheckpointError(f"{path} is malformed: {exc}") from exc


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"integer of {len(text)} digits (at most {MAX_INT_DIGITS} allowed)")
    return int(text)


def read_manifest_metadata(path: Path) -> dict[str, Any]:
    """The run metadata of a checkpoint already verified (no re-hashing); ``{}`` when it has none."""
    manifest = read_json(Path(path) / MANIFEST_NAME, MANIFEST_CAP)
    metadata = manifest.get("metadata") if isinstance(manifest, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def list_checkpoints(output_dir: Path) -> list[Path]:
    """The ``checkpoint-<step>`` folders of ``output_dir``, oldest step first; anything else is ignored."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [
        (int(match.group(1)), entry.name, entry)
        for entry in output_dir.iterdir()
        if (match := _CHECKPOINT_RE.match(entry.name)) and entry.is_dir()
    ]
    return [entry for _, _, entry in sorted(found)]


def get_last_checkpoint(folder: str | Path) -> str | None:
    """HF's helper for scripts: the newest ``checkpoint-<step>`` folder in ``folder`` that verifies, or None.

    transformers returns the highest-numbered folder whatever its state; here a folder that is not a
    complete, verified checkpoint is skipped (with a warning), since resuming from it would fail.
    """
    found = latest_good_checkpoint(Path(folder))
    return None if found is None else str(found)


def latest_good_checkpoint(
    output_dir: Path, required: Required | None = None, check: Callable[[Path], None] | None = None
) -> Path | None:
    """The newest checkpoint that verifies, or ``None``; each newer one skipped raises a :class:`CheckpointWarning`.

    ``check`` (the caller's reading of the verified folder) may raise :class:`CheckpointError` to skip it too.
    """
    for path in reversed(list_checkpoints(output_dir)):
        try:
            verify_checkpoint(path, required=required)
            if check is not None:
                check(path)
        except CheckpointError as exc:
            warnings.warn(f"skipping checkpoint {path}: {exc}", CheckpointWarning, stacklevel=2)
            continue
        return path
    return None


# --- rotate ----------------------------------------------------------------------------------------


def rotate_checkpoints(
    output_dir: Path, save_total_limit: int | None, protected: Iterable[Path] = (), *, keep_newest: bool = True
) -> list[Path]:
    """Delete the oldest checkpoints beyond ``save_total_limit``; returns the deleted paths, oldest first.

    Call only after a new checkpoint is committed. Inactive when the limit is ``None`` or ``<= 0``.
    The newest checkpoint (by step; not with ``keep_newest=False``, HF's end of a run with a limit
    of 1) and every ``protected`` one (the best) are kept; others go, oldest
    first, until ``max(save_total_limit, number kept)`` remain. Each is renamed to ``.trash-*`` and
    then removed; a removal that fails is logged and left to :func:`clean_stale`, a rename that fails
    raises its ``OSError``.
    """
    if save_total_limit is None or save_total_limit <= 0:
        return []
    output_dir = Path(output_dir)
    checkpoints = list_checkpoints(output_dir)
    if not checkpoints:
        return []
    protected_keys = {Path(p).resolve() for p in protected}
    keep = set(checkpoints[-1:] if keep_newest else []) | {c for c in checkpoints if c.resolve() in protected_keys}
    surplus = max(0, len(checkpoints) - max(save_total_limit, len(keep)))
    victims = [c for c in checkpoints if c not in keep][:surplus]
    for victim in victims:
        _discard(victim, output_dir)
    if victims:
        fsync_dir(output_dir)
    return victims


# --- helpers ---------------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or name.startswith(".") or "/" in name or os.sep in name:
        raise ValueError(f"checkpoint name must be a plain, non-hidden folder name, got {name!r}")


def _write_error(target: Path, stage: str, cause: Exception, outcome: str) -> CheckpointWriteError:
    error = CheckpointWriteError(
        f"could not write checkpoint {target} ({stage}): {type(cause).__name__}: {cause}; {outcome}"
    )
    code = errno_of(cause)
    error.errno = code  # type: ignore[assignment]
    error.target = target
    return error


def _check_manifest(manifest_path: Path, manifest: Any) -> dict[str, tuple[int, str]]:
    """Validate the manifest's shape; return ``{relative path: (size, sha256)}``."""

    def malformed(why: str) -> CheckpointError:
        return CheckpointError(f"{manifest_path} is malformed: {why}")

    if not isinstance(manifest, dict):
        raise malformed(f"expected a JSON object, got {type(manifest).__name__}")
    version = manifest.get("format_version")
    if type(version) is not int:
        raise malformed(f"format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{manifest_path} has format_version {version}: written by a newer statetrain "
            f"(this one reads format_version {FORMAT_VERSION}); upgrade statetrain to load it"
        )
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{manifest_path} has unknown format_version {version} (this statetrain reads {list(READABLE_VERSIONS)})"
        )
    if not isinstance(manifest.get("metadata"), dict):
        raise malformed("'metadata' must be an object")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise malformed("'files' must be an object")
    expected: dict[str, tuple[int, str]] = {}
    for rel, entry in files.items():
        parts = rel.split("/")
        if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts) or rel == MANIFEST_NAME:
            raise malformed(f"invalid file path {rel!r}")
        size = entry.get("size") if isinstance(entry, dict) else None
        sha = entry.get("sha256") if isinstance(entry, dict) else None
        if type(size) is not int or size < 0 or not isinstance(sha, str) or not _SHA256_RE.match(sha):
            raise malformed(f"entry for {rel!r} needs an integer 'size' >= 0 and a hex 'sha256', got {entry!r}")
        expected[rel] = (size, sha)
    if version == 1:
        return expected  # written before manifests checksummed themselves
    recorded = manifest.get("manifest_sha256")
    if not isinstance(recorded, str) or not _SHA256_RE.match(recorded):
        raise malformed("'manifest_sha256' (the manifest's checksum of its own content) is missing or not a sha256")
    if recorded != manifest_digest(manifest):
        raise CheckpointError(
            f"{manifest_path} is corrupt: its content does not match its own checksum (manifest_sha256); "
            "the manifest was altered or damaged after it was written"
        )
    return expected


def _put_back(aside: Path, target: Path) -> None:
    try:
        os.replace(aside, target)
    except OSError as exc:
        logger.warning("could not move %s back to %s (the next write will): %s", aside, target, exc)


def _discard(path: Path, output_dir: Path) -> None:
    """Rename ``path`` to a ``.trash-*`` folder, then remove it: never a half-deleted folder under a real name."""
    scratch = _SCRATCH_RE.match(path.name)
    name = scratch.group(2) if scratch else path.name
    trash = output_dir / f".trash-{name}-{secrets.token_hex(8)}"
    os.replace(path, trash)
    remove_path(trash)


def _check_required(
    files: dict[str, Any], metadata: dict[str, Any], required: Required | None, path: Path | None = None
) -> None:
    """Refuse a checkpoint that lacks a file the caller's format requires (whatever its manifest lists)."""
    if required is None:
        return
    missing = []
    for entry in required(metadata):
        alternatives = (entry,) if isinstance(entry, str) else tuple(entry)
        if not any(name in files for name in alternatives):
            missing.append(" or ".join(alternatives))
    if not missing:
        return
    what = f"lacks {', '.join(missing)}, which every checkpoint of this format holds"
    if path is None:
        raise ValueError(f"the checkpoint {what}; it is not committed")
    raise CheckpointError(f"{path} is incomplete: it {what}")
