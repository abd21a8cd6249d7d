"""What a statetrain checkpoint must hold, and the checks that read it before anything is loaded.

The store (``checkpoint_store``) knows folders, manifests and checksums; this module knows the format
the Trainer writes into them: which files every checkpoint has (so a folder whose manifest vouches
for less is refused), that its state files parse within their caps, which folder may provide the
best model, and whether weights are finite enough to be worth a checkpoint.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from statetrain.checkpoint.store import PREFIX, CheckpointError, read_json, verify_checkpoint
from statetrain.context.state import ENGINE_STATE_NAME, TRAINER_STATE_NAME, ContextFileError, EngineState, TrainerState

MODEL_NAME = "model.safetensors"
ADAPTER_NAME = "adapter_model.safetensors"  # a PEFT model's checkpoint holds its adapter instead
ARGS_NAME = "training_args.json"
_MAX_PROCESSES = 1 << 20
_ARGS_CAP = 16 << 20
_CHECKPOINT_RE = re.compile(rf"^{PREFIX}-(\d+)$")


def required_files(metadata: dict[str, Any]) -> list[str | tuple[str, ...]]:
    """The files every checkpoint with this manifest metadata holds, whatever its manifest lists.

    Weights (a PEFT model's adapter instead), trainer and engine state always; optimizer, schedule
    and every process's RNG state unless the run saved only the model. ``training_args.json`` is a
    record, never read to resume (an imported transformers checkpoint has none). Raises
    :class:`CheckpointError` for a process count that is not a positive integer.
    """
    names: list[str | tuple[str, ...]] = [(MODEL_NAME, ADAPTER_NAME), TRAINER_STATE_NAME, ENGINE_STATE_NAME]
    if metadata.get("save_only_model"):
        return names
    world_size = metadata.get("world_size", 1)
    if type(world_size) is not int or not 1 <= world_size <= _MAX_PROCESSES:
        raise CheckpointError(f"its manifest records world_size {world_size!r}, not a process count")
    rng = ["rng_state"] if world_size == 1 else [f"rng_state_{rank}" for rank in range(world_size)]
    for stem in ["optimizer", "scheduler", *rng]:
        names += [f"{stem}.json", f"{stem}.safetensors"]
    return names


def check_state_files(path: Path) -> None:
    """Parse the trainer and engine state of a verified checkpoint; a malformed one is a :class:`CheckpointError`.

    A manifest vouches for bytes, not for their meaning: a state file written by a buggy or hostile
    tool with a matching manifest must still be refused by name (and skipped by a resume from
    ``True``) rather than fail half-way through loading.
    """
    for name, model in ((TRAINER_STATE_NAME, TrainerState), (ENGINE_STATE_NAME, EngineState)):
        try:
            model.load_from_json(path / name)
        except (ContextFileError, OSError) as exc:
            raise CheckpointError(f"{path / name} cannot be loaded: {exc}") from exc


def resolve_best_checkpoint(output_dir: Path, recorded: str) -> Path:
    """The folder ``best_model_checkpoint`` names, only if it is this run's own verified checkpoint.

    It must be a ``checkpoint-<step>`` folder directly inside ``output_dir`` (not a link, not
    elsewhere) whose manifest verifies like any resume; an edited ``trainer_state.json`` therefore
    cannot swap the final model for weights from anywhere. Raises :class:`CheckpointError` otherwise.
    """
    candidate = Path(recorded)
    if not candidate.is_absolute() and candidate.parent == Path("."):
        candidate = Path(output_dir) / candidate
    inside = candidate.parent.resolve() == Path(output_dir).resolve()
    if not (inside and _CHECKPOINT_RE.match(candidate.name)) or candidate.is_symlink():
        raise CheckpointError(
            f"best_model_checkpoint {recorded!r} is not a checkpoint-<step> folder of output_dir "
            f"{str(output_dir)!r}; load_best_model_at_end loads only this run's own checkpoints"
        )
    verify_checkpoint(candidate, required=required_files)
    return candidate


def weights_are_finite(model: nn.Module) -> bool:
    """Whether every floating-point parameter and buffer is finite (one host sync, at save time only)."""
    flags = [torch.isfinite(t.detach()).all() for t in _float_tensors(model)]
    if not flags:
        return True
    return bool(torch.stack([f.to(flags[0].device) for f in flags]).all())


def _float_tensors(model: nn.Module) -> list[torch.Tensor]:
    tensors = [*model.parameters(), *model.buffers()]
    return [t for t in tensors if t.is_floating_point() and t.numel() > 0]


def optimizer_mismatch(path: Path, saved: Any, optimizer: Any, args: Any) -> str | None:
    """Why the optimizer state saved at ``path`` does not fit ``optimizer``, naming both; or ``None``.

    Each torch optimizer has its own hyperparameters in its parameter groups (SGD's ``momentum``,
    Adam's ``betas``...); loading another's state would fail at the first step with a bare
    ``KeyError``. ``training_args.json`` names the ``optim`` the checkpoint was written with.
    """
    saved_keys = _group_keys(saved)
    live_keys = _group_keys(optimizer.state_dict())
    if saved_keys is None or live_keys is None or saved_keys == live_keys:
        return None
    return (
        f"cannot resume from {path}: its optimizer state was written by another optimizer "
        f"({_recorded_optim(path)}, hyperparameters {sorted(saved_keys - live_keys)} this one lacks) than "
        f"this run's {type(optimizer).__name__} (optim={_plain(getattr(args, 'optim', None))!r}, "
        f"hyperparameters {sorted(live_keys - saved_keys)} the checkpoint lacks); resume with the optimizer "
        "the checkpoint was written with, or start a new run from its weights"
    )


def _group_keys(state: Any) -> set[str] | None:
    groups = state.get("param_groups") if isinstance(state, dict) else None
    if not isinstance(groups, list) or not groups or not all(isinstance(g, dict) for g in groups):
        return None
    return {str(key) for group in groups for key in group if key != "params"}


def _recorded_optim(path: Path) -> str:
    try:
        data = read_json(path / ARGS_NAME, _ARGS_CAP)
    except CheckpointError:
        return "optim unknown"
    value = data.get("optim") if isinstance(data, dict) else None
    return f"optim={value!r}" if isinstance(value, str) else "optim unknown"


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)
