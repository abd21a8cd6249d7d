"""Capture, restore and checkpoint every global random generator a training run draws from.

A resumed run only reproduces an uninterrupted one if dropout masks, data shuffling and any
Python/numpy randomness continue from exactly where they stopped. The state is stored through
:mod:`statetrain.checkpoint.tensor_tree` (JSON + safetensors, no pickle), under the same keys
transformers' ``Trainer`` uses in its ``rng_state*.pth`` files: ``python``, ``numpy``, ``cpu`` and
``cuda``.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from statetrain.checkpoint.tensor_tree import TreeFormatError, load_tree, save_tree, tree_paths

__all__ = ["capture_rng_state", "load_rng_state", "restore_rng_state", "rng_state_name", "save_rng_state"]

logger = logging.getLogger(__name__)

_KNOWN_KEYS = frozenset({"python", "numpy", "cpu", "cuda"})


def capture_rng_state() -> dict[str, Any]:
    """Snapshot Python's, numpy's legacy global, torch's CPU and (if present) every CUDA device's RNG.

    All CUDA devices are captured, not only the current one, so that a process driving several
    devices (or a rank whose current device changes) restores all of them.
    """
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "cpu": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back a state from :func:`capture_rng_state` / :func:`load_rng_state`.

    Keys that are absent are left alone. A CUDA state that does not fit this machine (no CUDA,
    or a different device count) restores what it can and logs a warning rather than failing,
    as transformers does: the run still resumes, only not bit-identically.
    """
    unknown = set(state) - _KNOWN_KEYS
    if unknown:
        raise ValueError(f"unknown RNG state keys {sorted(unknown)}; expected a subset of {sorted(_KNOWN_KEYS)}")
    if "python" in state:
        random.setstate(state["python"])
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "cpu" in state:
        # set_rng_state needs a CPU ByteTensor even when the checkpoint was mapped elsewhere.
        torch.set_rng_state(_byte_tensor(state["cpu"], "cpu"))
    if "cuda" in state:
        _restore_cuda(state["cuda"])


def _byte_tensor(value: Any, key: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8:
        raise TypeError(f"RNG state {key!r} must be a uint8 tensor, got {type(value).__name__}")
    return value.cpu()


def _restore_cuda(states: Any) -> None:
    if isinstance(states, torch.Tensor):  # a single device's state, as transformers saves without DDP
        states = [states]
    if not isinstance(states, (list, tuple)):
        raise TypeError(f"RNG state 'cuda' must be a list of uint8 tensors, got {type(states).__name__}")
    tensors = [_byte_tensor(s, f"cuda[{i}]") for i, s in enumerate(states)]
    if not torch.cuda.is_available():
        if tensors:
            logger.warning("checkpoint has CUDA RNG states but CUDA is not available; they are not restored")
        return
    count = torch.cuda.device_count()
    if len(tensors) != count:
        logger.warning(
            "checkpoint has CUDA RNG states for %d device(s), this machine has %d; restoring the first %d",
            len(tensors),
            count,
            min(len(tensors), count),
        )
    for index, tensor in enumerate(tensors[:count]):
        torch.cuda.set_rng_state(tensor, index)


def rng_state_name(rank: int | None) -> str:
    """``rng_state`` for a single process, ``rng_state_<rank>`` per rank (as transformers names them)."""
    if rank is None:
        return "rng_state"
    if type(rank) is not int or rank < 0:
        raise ValueError(f"rank must be a non-negative int or None, got {rank!r}")
    return f"rng_state_{rank}"


def save_rng_state(directory: Path | str, rank: int | None = None) -> list[Path]:
    """Capture the current RNG state and write ``rng_state[_<rank>].json`` + ``.safetensors``."""
    return save_tree(capture_rng_state(), directory, rng_state_name(rank))


def load_rng_state(directory: Path | str, rank: int | None = None) -> dict[str, Any]:
    """Read the state :func:`save_rng_state` wrote (tensors on CPU); it does not restore it.

    Raises ``FileNotFoundError`` naming the missing file, so a resume from a checkpoint without
    RNG files fails loudly instead of silently continuing with fresh randomness.
    """
    name = rng_state_name(rank)
    for path in tree_paths(directory, name):
        if not path.is_file():
            raise FileNotFoundError(f"RNG state file not found: {path}")
    state = load_tree(directory, name, map_location="cpu")
    if not isinstance(state, dict) or not set(state) <= _KNOWN_KEYS:
        json_path = tree_paths(directory, name)[0]
        raise TreeFormatError(f"{json_path}: not an RNG state (expected a dict with keys among {sorted(_KNOWN_KEYS)})")
    return state
