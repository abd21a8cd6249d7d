"""What the checkpoint store raises and warns: one class per kind of trouble, each message naming the path."""

from __future__ import annotations

from pathlib import Path


class CheckpointError(ValueError):
    """A folder is not a loadable statetrain checkpoint; the message says why and names the file."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; no temporary folder is left and earlier checkpoints are intact.

    An ``OSError`` because the causes are overwhelmingly I/O (disk full, file too large, permission),
    so code that already handles ``OSError`` around saving handles this too. ``errno`` is the cause's
    errno when the cause is an ``OSError`` (``None`` otherwise, e.g. when the caller's writer raised a
    ``TypeError``); ``target`` is the checkpoint path; the cause is ``__cause__``.
    """

    target: Path | None = None


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped (it does not verify) or restored after an interrupted replace."""
