"""The model folder that the Hugging Face ecosystem loads: what ``save_model`` and checkpoints write.

A transformers model is written by its own ``save_pretrained`` (``config.json``,
``generation_config.json``, ``model.safetensors`` with tied weights under the names transformers
keeps), so ``AutoModel*.from_pretrained`` loads the folder and the file set is HF's. Any other
module is written with safetensors (a shared tensor once) plus a ``config.json`` when it has a
saving config, and a PEFT model by its adapter only (as HF saves it). The processing class is
saved beside it; when none was given, the data collator's tokenizer is, as HF does.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import safetensors.torch
from torch import nn

from statetrain.checkpoint.peft_adapter import is_peft_model, save_adapter

MODEL_NAME = "model.safetensors"
NO_SHARDING = "100000GB"
"""One weights file whatever the size: statetrain's resume reads ``model.safetensors``."""


def is_transformers_model(model: nn.Module) -> bool:
    """A transformers ``PreTrainedModel`` (only checked when transformers is already imported)."""
    transformers = sys.modules.get("transformers")
    if transformers is None:
        return False
    pretrained = getattr(transformers, "PreTrainedModel", None)
    return pretrained is not None and isinstance(model, pretrained)


def processor_to_save(processing_class: Any, data_collator: Any) -> Any:
    """The processing class, else the data collator's tokenizer (HF saves that one by default)."""
    if processing_class is not None:
        return processing_class
    return getattr(data_collator, "tokenizer", None)


def save_model_files(
    model: nn.Module, processing_class: Any, folder: Path, state: dict[str, Any] | None = None
) -> None:
    """Weights, config (and generation config) and processor files in ``folder``.

    ``state`` is the full state dict gathered from a sharded model (FSDP, DeepSpeed), written instead
    of the module's.
    """
    if is_peft_model(model):  # the adapter only, as HF saves it (no base weights, no config.json)
        save_adapter(model, folder, state)
    elif is_transformers_model(model):
        model.save_pretrained(str(folder), state_dict=state, max_shard_size=NO_SHARDING)  # type: ignore[operator]
    else:
        if state is not None:
            safetensors.torch.save_file(state, str(folder / MODEL_NAME), metadata={"format": "pt"})
        else:
            safetensors.torch.save_model(model, str(folder / MODEL_NAME), metadata={"format": "pt"})
        config = getattr(model, "config", None)
        if config is not None and callable(getattr(config, "save_pretrained", None)):
            config.save_pretrained(str(folder))
    if processing_class is not None and callable(getattr(processing_class, "save_pretrained", None)):
        processing_class.save_pretrained(str(folder))
