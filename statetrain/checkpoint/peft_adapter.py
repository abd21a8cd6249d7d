"""PEFT models (LoRA and the rest) in checkpoints and ``save_model``: the adapter, not the base weights.

As transformers' Trainer does, a ``peft.PeftModel`` is saved with its own ``save_pretrained``:
``adapter_model.safetensors`` (only the adapter's tensors), ``adapter_config.json`` and peft's
``README.md``; the frozen base model is not written (it is what ``from_pretrained`` gave the
user, and would make every checkpoint as large as the model). Loading puts the adapter tensors back
into the live model in place with peft's ``set_peft_model_state_dict``, so a resume is bit-exact
and ``load_best_model_at_end`` restores the best adapter.

peft is optional: a model is a PEFT model only if peft was imported (by whoever built the model).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
from torch import nn

__all__ = [
    "ADAPTER_CONFIG_NAME",
    "ADAPTER_WEIGHTS_NAME",
    "AdapterLoadError",
    "is_peft_model",
    "load_adapter",
    "save_adapter",
]

ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
ADAPTER_CONFIG_NAME = "adapter_config.json"


class AdapterLoadError(ValueError):
    """An adapter file is missing, unreadable or does not fit the model; the message names the file."""


def is_peft_model(model: Any) -> bool:
    """Whether ``model`` is a ``peft.PeftModel`` (without importing peft when nobody has)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def save_adapter(model: nn.Module, folder: Path, state: dict[str, Any] | None = None) -> None:
    """``adapter_model.safetensors`` + ``adapter_config.json`` (+ peft's README.md) into ``folder``.

    ``state`` is a full state dict gathered from a sharded model; peft keeps the adapter's part.
    """
    model.save_pretrained(str(folder), state_dict=state, safe_serialization=True)  # type: ignore[operator]


def load_adapter(model: nn.Module, folder: Path) -> None:
    """Put the adapter saved in ``folder`` back into ``model`` (its active adapter), in place.

    Strict: a tensor of the model's adapter that the file lacks, or a file tensor the model has no
    place for, is an error naming both lists, as a plain model's weights are checked.
    """
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    path = folder / ADAPTER_WEIGHTS_NAME
    if not path.is_file():
        raise AdapterLoadError(f"{path} is missing: the checkpoint holds no adapter weights for this PEFT model")
    try:
        saved = safetensors.torch.load_file(str(path))
    except (safetensors.SafetensorError, OSError, ValueError) as exc:
        raise AdapterLoadError(f"{path} is not a readable safetensors file: {exc}") from exc
    adapter_name = getattr(model, "active_adapter", "default")
    expected = set(get_peft_model_state_dict(model, adapter_name=adapter_name))
    missing, extra = sorted(expected - set(saved)), sorted(set(saved) - expected)
    if missing or extra:
        raise AdapterLoadError(f"{path} does not match the model's adapter: missing {missing}, unexpected {extra}")
    try:
        set_peft_model_state_dict(model, saved, adapter_name=adapter_name)
    except RuntimeError as exc:  # shapes that differ (another rank r)
        raise AdapterLoadError(f"{path} does not match the model's adapter: {exc}") from exc
