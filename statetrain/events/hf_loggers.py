"""Where a message that HF's Trainer also logs goes: transformers' own logger when transformers is in use.

HF's users see such messages (and their tests capture them) through transformers' verbosity,
handlers and module loggers (``transformers.trainer``, ``transformers.trainer_callback``);
without transformers, a ``statetrain`` logger carries them. Nothing is imported here unless the
application has already imported transformers.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

TRAINER = "transformers.trainer"
CALLBACKS = "transformers.trainer_callback"


def hf_facing_logger(fallback: logging.Logger, name: str = TRAINER) -> logging.Logger:
    """transformers' logger ``name`` when transformers is in use, else ``fallback``."""
    hf_logging = transformers_logging()
    return fallback if hf_logging is None else hf_logging.get_logger(name)


def transformers_logging() -> Any:
    """``transformers.utils.logging`` when the application has imported transformers, else None."""
    if "transformers" not in sys.modules:
        return None
    from transformers.utils import logging as hf_logging

    return hf_logging
