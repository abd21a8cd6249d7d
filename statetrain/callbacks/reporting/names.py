"""How HF's integration callbacks name what they log, and where TensorBoard files go by default.

Trackers group curves by prefix, so a dashboard filled by statetrain must read like one filled
by ``transformers``: training values under ``train/``, evaluation under ``eval/``, prediction
under ``test/``, and a run folder named ``runs/<Mon DD_HH-MM-SS>_<host>`` as torch names it.
"""

from __future__ import annotations

import math
import os
import socket
from datetime import datetime
from typing import Any

# Values HF's W&B and Trackio callbacks put in the run summary instead of the history.
SUMMARY_ONLY = frozenset(
    ["train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "total_flos"]
)

_PREFIXES = (("eval_", "eval/"), ("test_", "test/"))


def rewrite_logs(logs: dict[str, Any]) -> dict[str, Any]:
    """``eval_loss`` -> ``eval/loss``, ``test_x`` -> ``test/x``, anything else -> ``train/<name>``."""
    renamed: dict[str, Any] = {}
    for key, value in logs.items():
        for prefix, group in _PREFIXES:
            if key.startswith(prefix):
                renamed[group + key[len(prefix) :]] = value
                break
        else:
            renamed["train/" + key] = value
    return renamed


def default_logdir() -> str:
    """``runs/<Mon DD_HH-MM-SS>_<host>``: torch's SummaryWriter default, which HF puts under output_dir."""
    stamp = datetime.now().strftime("%b%d_%H-%M-%S")
    return os.path.join("runs", f"{stamp}_{socket.gethostname()}")


def as_scalar(value: Any) -> float | int | None:
    """A loggable number (a one-element tensor counts), or ``None`` for anything else."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    numel = getattr(value, "numel", None)
    if callable(numel) and numel() == 1:
        item = value.item()
        return item if isinstance(item, (int, float)) else None
    return None


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def model_config_dict(model: Any) -> dict[str, Any]:
    """The model's HF config as a dict (empty for a plain ``nn.Module``), for run parameters."""
    config = getattr(model, "config", None)
    if config is None:
        return {}
    if isinstance(config, dict):
        return dict(config)
    to_dict = getattr(config, "to_dict", None)
    return dict(to_dict()) if callable(to_dict) else {}


def stored_attributes(state: Any, callback: Any) -> dict[str, Any]:
    """What a checkpoint recorded for this callback's class (its ``state()['attributes']``), or ``{}``.

    Reporters read it themselves when a run resumes, whatever ``restore_callback_states_from_checkpoint``
    says: continuing the same run in the tracker is part of resuming, not a callback setting.
    """
    entry = (getattr(state, "stateful_callbacks", None) or {}).get(type(callback).__name__)
    if isinstance(entry, list):
        entry = entry[0] if entry else None
    if not isinstance(entry, dict):
        return {}
    attributes = entry.get("attributes", {})
    return dict(attributes) if isinstance(attributes, dict) else {}
