"""Full (unsharded) model and optimizer state of an FSDP-wrapped model, for checkpoints written once.

Under FSDP each process holds a shard of every parameter and of its optimizer state, so neither
``model.state_dict()`` nor ``optimizer.state_dict()`` is what a statetrain checkpoint stores. The
checkpoint keeps one full copy instead (the layout of a one-process run, verified by one manifest),
gathered with ``torch.distributed.checkpoint.state_dict``, the API accelerate's FSDP support builds
on. Gathering is collective: every process calls these functions at the same point, and the full
tensors land on CPU in the main process only. On resume every process reads the full state and
keeps its own shard.

A model that is not FSDP-wrapped (one process, DDP) takes the plain path: nothing is gathered. A
DeepSpeed engine's optimizer partitions are handled by ``deepspeed_state``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from statetrain.checkpoint.deepspeed import (
    deepspeed_model_state,
    gather_deepspeed_state,
    holds_deepspeed_partitions,
    is_deepspeed_engine,
    restore_deepspeed_state,
)


def is_fsdp(model: nn.Module) -> bool:
    """Whether ``model`` (or a module inside it) is sharded by FSDP, version 1 or 2."""
    kinds: list[type] = []
    try:
        from torch.distributed.fsdp import FSDPModule

        kinds.append(FSDPModule)
    except ImportError:  # torch without FSDP2
        pass
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel

        kinds.append(FullyShardedDataParallel)
    except ImportError:
        pass
    return bool(kinds) and any(isinstance(module, tuple(kinds)) for module in model.modules())


def _full_options() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def gather_model_state(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The full state dict of a sharded model (collective; filled on the main process, empty elsewhere).

    FSDP: gathered from the shards. DeepSpeed: the whole module, copied out of DeepSpeed's flat
    buffers (gathered from the partitions under ZeRO-3). None otherwise: the caller saves the module
    as usual.
    """
    if is_deepspeed_engine(model):
        return deepspeed_model_state(model)
    if not is_fsdp(model):
        return None
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state: dict[str, Any] = get_model_state_dict(model, options=_full_options())
    return {name: tensor.contiguous() for name, tensor in state.items() if isinstance(tensor, torch.Tensor)}


def gather_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
    """The full optimizer state of an FSDP model, keyed by parameter name (collective); None if not FSDP."""
    if not is_fsdp(model):
        return None
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state: dict[str, Any] = get_optimizer_state_dict(model, optimizer, options=_full_options())
    return state


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a saved optimizer state: the full state into this process's shard under FSDP, this
    process's partition under DeepSpeed, else as usual."""
    if is_deepspeed_engine(model):
        restore_deepspeed_state(model, state)
        return
    if holds_deepspeed_partitions(state):
        raise ValueError(
            "the checkpoint's optimizer state holds DeepSpeed ZeRO partitions, written by a run with deepspeed; "
            "resume it with the same deepspeed configuration (or load only its model.safetensors)"
        )
    if not is_fsdp(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def gather_for_checkpoint(
    model: nn.Module, optimizer: Any, save_only_model: bool
) -> tuple[dict[str, torch.Tensor] | None, dict[str, Any] | None]:
    """What a sharded model's checkpoint holds instead of the plain state dicts (collective).

    FSDP: the full model and optimizer state. DeepSpeed: the whole module and every process's
    optimizer partition. Otherwise ``(None, None)``.
    """
    if is_deepspeed_engine(model):
        return deepspeed_model_state(model), None if save_only_model else gather_deepspeed_state(model)
    if not is_fsdp(model):
        return None, None
    raw = getattr(optimizer, "optimizer", optimizer)
    return gather_model_state(model), None if save_only_model else gather_optimizer_state(model, raw)
