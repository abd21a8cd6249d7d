"""DeepSpeed ZeRO state in a statetrain checkpoint, without DeepSpeed's pickles.

DeepSpeed's own checkpoint (``engine.save_checkpoint``) is a set of ``torch.save`` files, which
statetrain never reads. Its state is small to describe, though: the model (whole on every process
under ZeRO 0-2, gathered from the partitions under ZeRO-3) goes to ``model.safetensors`` as in any
run, and each process holds *its* part of the optimizer: a plain torch optimizer over fp32 master
tensors (flat partitions of the parameters, full copies under stage 0), a loss scaler and the
engine's step counters. Each process's part is gathered to the writer and saved like any other
state tree (JSON + safetensors); on resume every process loads its own part back into the same
objects DeepSpeed built (under ZeRO-3 through DeepSpeed's own loader of that state, which also
refreshes the 16-bit partitions), so the run continues bit for bit.

The parts are laid out for the process count and stage that wrote them; a resume with another
count is refused before anything is loaded (the checkpoint records the world size), another stage
when the parts are read.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from statetrain.checkpoint.tensor_tree import tensor_identity

FORMAT = "statetrain-deepspeed-zero-partitions"
ENGINE_COUNTERS = ("global_steps", "global_samples", "micro_steps", "skipped_steps")
SCALER_FIELDS = ("cur_scale", "cur_iter", "last_overflow_iter", "cur_hysteresis")
# the keys of DeepSpeed's ZeRO-3 rigid state (deepspeed.checkpoint.constants), spelled here to keep
# deepspeed an optional import
_OPTIMIZER_STATE_DICT = "optimizer_state_dict"
_FP32_FLAT_GROUPS = "fp32_flat_groups"
_LOSS_SCALER = "loss_scaler"


def is_deepspeed_engine(model: Any) -> bool:
    """Whether ``model`` is a DeepSpeed engine (checked by name: deepspeed is an optional, heavy import)."""
    return any(cls.__name__ == "DeepSpeedEngine" for cls in type(model).__mro__)


def deepspeed_module(engine: Any) -> nn.Module:
    """The user's module inside a DeepSpeed engine."""
    module: nn.Module = engine.module
    return module


def own_storage_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` with tied tensors once (the first name, as HF keeps) and each in its own storage.

    DeepSpeed ZeRO turns every parameter into a view of one flat buffer, which safetensors refuses
    to save as is (no name covers the whole storage); copies of the views save like any tensor.
    """
    state: dict[str, torch.Tensor] = {}
    seen: set[tuple[Any, ...]] = set()
    for name, tensor in module.state_dict().items():
        identity = tensor_identity(tensor)
        if identity in seen and tensor.numel() > 0:
            continue
        seen.add(identity)
        state[name] = tensor.detach().clone(memory_format=torch.contiguous_format)
    return state


def deepspeed_model_state(engine: Any) -> dict[str, torch.Tensor]:
    """The whole module of a DeepSpeed engine (collective under ZeRO-3, which partitions the parameters)."""
    module = deepspeed_module(engine)
    if _stage(engine) < 3:
        return own_storage_state(module)
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
        return own_storage_state(module)


def _base_optimizer(engine: Any) -> torch.optim.Optimizer:
    """The torch optimizer DeepSpeed steps: inside its ZeRO/mixed-precision wrapper, or the client's own."""
    wrapper = engine.optimizer
    base = getattr(wrapper, "optimizer", wrapper)
    if not isinstance(base, torch.optim.Optimizer):
        raise TypeError(
            f"DeepSpeed's optimizer {type(wrapper).__name__} wraps {type(base).__name__}, not a torch optimizer; "
            "statetrain checkpoints DeepSpeed runs whose optimizer statetrain built (optim=...)"
        )
    return base


def _loss_scaler(engine: Any) -> Any:
    return getattr(engine.optimizer, "loss_scaler", None)


def _stage(engine: Any) -> int:
    return int(engine.zero_optimization_stage())


def capture_partition(engine: Any) -> dict[str, Any]:
    """This process's part of the optimizer: the base optimizer's state, its fp32 masters, the loss scale.

    Under ZeRO-3 the base optimizer sees its fp32 partitions only while DeepSpeed lends them to it
    (``_rigid_state_dict``, the state DeepSpeed itself checkpoints); the masters are those partitions.
    """
    scaler = _loss_scaler(engine)
    scale = {name: getattr(scaler, name) for name in SCALER_FIELDS if hasattr(scaler, name)}
    if _stage(engine) >= 3:
        rigid = engine.optimizer._rigid_state_dict()
        flat = [t.detach() for t in rigid[_FP32_FLAT_GROUPS]]
        return {"base_optimizer": rigid[_OPTIMIZER_STATE_DICT], "masters": [flat], "loss_scaler": scale}
    base = _base_optimizer(engine)
    return {
        "base_optimizer": base.state_dict(),
        "masters": [[param.detach() for param in group["params"]] for group in base.param_groups],
        "loss_scaler": scale,
    }


def gather_deepspeed_state(engine: Any) -> dict[str, Any]:
    """Every process's part plus the engine's counters (collective with several processes).

    The parts travel to every process in memory (as the RNG states do), so each writer
    (``save_on_each_node``) has all of them.
    """
    stage = _stage(engine)
    part = capture_partition(engine)
    world_size = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    parts: list[Any] = [part]
    if world_size > 1:
        parts = [None] * world_size
        torch.distributed.all_gather_object(parts, part)
    return {
        "format": FORMAT,
        "zero_stage": stage,
        "world_size": world_size,
        "engine": {name: int(getattr(engine, name)) for name in ENGINE_COUNTERS},
        "partitions": parts,
    }


def holds_deepspeed_partitions(tree: Any) -> bool:
    """Whether a saved optimizer state is the gathered DeepSpeed partitions rather than a torch state dict."""
    return isinstance(tree, dict) and tree.get("format") == FORMAT


def _check_shapes(saved: list[list[torch.Tensor]], live: list[list[torch.Tensor]], where: str) -> None:
    shapes = [[tuple(t.shape) for t in group] for group in live]
    kept = [[tuple(t.shape) for t in group] for group in saved]
    if shapes != kept:
        raise ValueError(
            f"{where}: the saved DeepSpeed master partitions have shapes {kept}, this run's have {shapes}; "
            "the model, the parameter groups or the DeepSpeed configuration changed since the checkpoint"
        )


def restore_deepspeed_state(engine: Any, tree: dict[str, Any], where: str = "optimizer") -> None:
    """Load this process's part of a gathered state into the engine DeepSpeed built for this run."""
    if not holds_deepspeed_partitions(tree):
        raise ValueError(
            f"{where} does not hold DeepSpeed ZeRO partitions (format {FORMAT!r}); it was written by a run "
            "without deepspeed, which this run cannot continue with DeepSpeed"
        )
    stage = _stage(engine)
    world_size = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    if tree["zero_stage"] != stage or tree["world_size"] != world_size:
        raise ValueError(
            f"{where} was written under ZeRO stage {tree['zero_stage']} with {tree['world_size']} process(es); "
            f"this run has stage {stage} with {world_size}: the partitions do not fit"
        )
    part = tree["partitions"][rank]
    scaler = _loss_scaler(engine)
    for name, value in part["loss_scaler"].items():
        setattr(scaler, name, value)
    if stage >= 3:
        _restore_zero3(engine.optimizer, part, where)
    else:
        base = _base_optimizer(engine)
        _check_shapes(part["masters"], [group["params"] for group in base.param_groups], where)
        with torch.no_grad():
            for group, saved in zip(base.param_groups, part["masters"], strict=True):
                for param, value in zip(group["params"], saved, strict=True):
                    param.copy_(value)
        base.load_state_dict(part["base_optimizer"])
    for name, value in tree["engine"].items():
        setattr(engine, name, value)


def _restore_zero3(optimizer: Any, part: dict[str, Any], where: str) -> None:
    """ZeRO-3: DeepSpeed's own loader of its rigid state (fp32 partitions, then the 16-bit ones from them)."""
    _check_shapes(part["masters"], [list(optimizer.fp32_partitioned_groups_flat)], where)
    rigid = {
        _LOSS_SCALER: optimizer.loss_scaler,
        "dynamic_loss_scale": optimizer.dynamic_loss_scale,
        "overflow": False,
        _OPTIMIZER_STATE_DICT: part["base_optimizer"],
        _FP32_FLAT_GROUPS: part["masters"][0],
    }
    optimizer._rigid_load_state_dict(rigid, load_optimizer_states=True)
