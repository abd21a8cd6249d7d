"""Optional packages an argument can ask for: found without importing them, refused by name when missing.

They live with the arguments because building the process state for ``TrainingArguments.deepspeed``
already needs the answer, and the distributed layer sits above the arguments.
"""

from __future__ import annotations

import importlib.util


def deepspeed_available() -> bool:
    """Whether the optional ``deepspeed`` package is installed (not imported: it is heavy)."""
    return importlib.util.find_spec("deepspeed") is not None


def require_deepspeed() -> None:
    """Raise ImportError naming the argument and the package when ``deepspeed`` is not installed."""
    if not deepspeed_available():
        raise ImportError(
            "TrainingArguments.deepspeed is set, which needs the 'deepspeed' package, and it is not installed; "
            "install it (pip install deepspeed) or leave deepspeed unset"
        )
