"""DeepSpeed ZeRO (stages 0-2) optimizer state in a statetrain checkpoint, without DeepSpeed's pickles.

DeepSpeed's own checkpoint (``engine.save_checkpoint``) is a set of ``torch.save`` files, which
statetrain never reads. Its state is small to describe, though: under ZeRO stages 0-2 every
process holds the full model (restored from ``model.safetensors`` as in any run) plus *its* part
of the optimizer: a plain torch optimizer over fp32 master tensors (flat partitions of the
parameters under ZeRO-1/2, full copies under stage 0), a loss scaler and the engine's step
counters. Each process's part is gathered to the writer and saved like any other state tree
(JSON + safetensors); on resume every process loads its own part back into the same objects
DeepSpeed built, so the run continues bit for bit.

The parts are laid out for the process count that wrote them; a resume with another count is
refused before anything is loaded (the checkpoint records the world size). ZeRO-3 partitions the
model itself and is refused when the arguments ask for checkpoints (see ``scaling``).
"""

from __future__ import annotations

from typing import Any

import torch

FORMAT = "statetrain-deepspeed-zero-partitions"
ENGINE_COUNTERS = ("global_steps", "global_samples", "micro_steps", "skipped_steps")
SCALER_FIELDS = ("cur_scale", "cur_iter", "last_overflow_iter", "cur_hysteresis")


def is_deepspeed_engine(model: Any) -> bool:
    """Whether ``model`` is a DeepSpeed engine (checked by name: deepspeed is an optional, heavy import)."""
    return any(cls.__name__ == "DeepSpeedEngine" for cls in type(model).__mro__)


def deepspeed_module(engine: Any) -> torch.nn.Module:
    """The user's module inside a DeepSpeed engine."""
    module: torch.nn.Module = engine.module
    return module


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
    """This process's part of the optimizer: the base optimizer's state, its fp32 masters, the loss scale."""
    base = _base_optimizer(engine)
    scaler = _loss_scaler(engine)
    return {
        "base_optimizer": base.state_dict(),
        "masters": [[param.detach() for param in group["params"]] for group in base.param_groups],
        "loss_scaler": {name: getattr(scaler, name) for name in SCALER_FIELDS if hasattr(scaler, name)},
    }


def gather_deepspeed_state(engine: Any) -> dict[str, Any]:
    """Every process's part plus the engine's counters (collective with several processes).

    The parts travel to every process in memory (as the RNG states do), so each writer
    (``save_on_each_node``) has all of them.
    """
    stage = _stage(engine)
    if stage >= 3:
        raise NotImplementedError(
            "checkpoints under DeepSpeed ZeRO-3 are not implemented: set zero_optimization.stage to 0-2, "
            "save_strategy='no', or use fsdp"
        )
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


def _check_shapes(saved: list[list[torch.Tensor]], base: torch.optim.Optimizer, where: str) -> None:
    live = [[tuple(p.shape) for p in group["params"]] for group in base.param_groups]
    kept = [[tuple(t.shape) for t in group] for group in saved]
    if live != kept:
        raise ValueError(
            f"{where}: the saved DeepSpeed master partitions have shapes {kept}, this run's have {live}; "
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
    base = _base_optimizer(engine)
    _check_shapes(part["masters"], base, where)
    with torch.no_grad():
        for group, saved in zip(base.param_groups, part["masters"], strict=True):
            for param, value in zip(group["params"], saved, strict=True):
                param.copy_(value)
    base.load_state_dict(part["base_optimizer"])
    scaler = _loss_scaler(engine)
    for name, value in part["loss_scaler"].items():
        setattr(scaler, name, value)
    for name, value in tree["engine"].items():
        setattr(engine, name, value)
