"""Resuming with a different batch geometry: refused by name, or accepted on request.

A checkpoint records the per-device batch size, the gradient accumulation, the number of
processes and the dataset length. A resume with other values would replay or skip data, so it is
refused naming each change, unless ``TrainingArguments.resume_allow_changed`` lists it. An
accepted change resumes at the checkpoint's ``global_step`` (schedule, optimizer, RNG and
``TrainerState`` as saved) with the data position of the resumed epoch recomputed in samples:
the samples the checkpoint had consumed in its epoch, divided by the new global micro-batch
(rounded down, so no unseen sample is skipped), then rounded down to a whole window of the new
accumulation. Up to one optimizer step's worth of samples may therefore be seen twice; with a
changed dataset length the sampler's order differs anyway, and the position only says how far
into the epoch the run was. The resumed run is not bit-identical to any uninterrupted one.

``world_size`` cannot be accepted this way: each process's data shard and random state are saved
per rank (see ``statetrain.distributed.processes``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from statetrain.args.rules import ALLOWABLE_CHANGES

GEOMETRY_FIELDS = ("per_device_train_batch_size", "gradient_accumulation_steps", "world_size", "dataset_length")
"""What a checkpoint records and a resume must match."""


class ResumeGeometryWarning(UserWarning):
    """A resume accepted a changed batch geometry (``resume_allow_changed``); it is not bit-exact."""


def geometry_changes(recorded: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{field: (checkpoint value, current value)}`` for every recorded field that differs."""
    return {
        key: (recorded[key], current[key])
        for key in GEOMETRY_FIELDS
        if key in recorded and key in current and recorded[key] != current[key]
    }


def review_changes(path: Path, recorded: dict[str, Any], current: dict[str, Any], allowed: Any) -> str | None:
    """The refusal message when a change is not allowed; otherwise ``None``, after warning about the accepted ones."""
    changes = geometry_changes(recorded, current)
    if not changes:
        return None
    accepted = set(allowed or ())
    described = "; ".join(f"{key}: checkpoint {old!r}, now {new!r}" for key, (old, new) in changes.items())
    refused = [key for key in changes if key not in accepted]
    if refused:
        allowable = [key for key in refused if key in ALLOWABLE_CHANGES]
        hint = (
            f", or accept the change with TrainingArguments(resume_allow_changed={allowable!r}) (the data "
            "position is then recomputed in samples and the run is no longer bit-exact; see docs/checkpoints.md)"
            if allowable
            else ""
        )
        return (
            f"cannot resume from {path}: the run changed ({described}). Resuming would replay or skip "
            f"different data; use the checkpoint's settings{hint}"
        )
    warnings.warn(
        f"resuming from {path} with a changed batch geometry ({described}), accepted by resume_allow_changed: "
        "the resumed epoch's data restarts at the last window boundary before the samples the checkpoint "
        "had consumed; the run is not bit-identical to an uninterrupted one",
        ResumeGeometryWarning,
        stacklevel=3,
    )
    return None


def rescale_position(batches_in_epoch: int, recorded: dict[str, Any], current: dict[str, Any]) -> int:
    """The resumed epoch's position, in micro-batches of the current geometry (see the module docstring).

    A position past the end of a shorter epoch is left as it is: the epoch then yields no more
    batches and ends, as it would have.
    """
    if not geometry_changes(recorded, current) or batches_in_epoch == 0:
        return batches_in_epoch
    old_batch = int(recorded.get("per_device_train_batch_size") or current["per_device_train_batch_size"])
    old_world = int(recorded.get("world_size") or current["world_size"])
    samples = batches_in_epoch * old_batch * old_world
    position = samples // (int(current["per_device_train_batch_size"]) * int(current["world_size"]))
    accumulation = int(current["gradient_accumulation_steps"])
    return position - position % accumulation


def epochs_for_budget(plan: Any, global_step: int, epoch_index: int, batches_in_epoch: int, epoch_ended: bool) -> int:
    """How many epochs a resumed run with an accepted geometry change needs to reach ``plan.max_steps``.

    The plan counts epochs for the new geometry from step 0, but the checkpoint's steps were taken
    with the old one, so the epochs it plans may end before ``max_steps``: a run asked for
    ``max_steps=8`` would stop at step 6 and report success. The budget in steps wins: enough
    epochs are added to reach it from the resumed position (never fewer than planned).
    """
    per_epoch = plan.num_update_steps_per_epoch
    accumulation = max(int(plan.gradient_accumulation_steps), 1)
    if per_epoch <= 0 or plan.steps_in_epoch <= 0:
        return int(plan.num_train_epochs)
    if epoch_ended:
        epoch_index, batches_in_epoch = epoch_index + 1, 0
    left_in_epoch = max(0, plan.steps_in_epoch - batches_in_epoch)
    steps_left_in_epoch = -(-left_in_epoch // accumulation)
    beyond = max(0, plan.max_steps - global_step - steps_left_in_epoch)
    needed = epoch_index + 1 + -(-beyond // per_epoch)
    return max(int(plan.num_train_epochs), needed)


def steps_for_epochs(plan: Any, global_step: int, epoch_index: int, batches_in_epoch: int, epoch_ended: bool) -> int:
    """The ``max_steps`` that trains the planned epochs' worth of samples from a resumed position.

    Without an explicit ``max_steps`` the budget is the epochs, but the plan's step count is for
    the new geometry from step 0 while ``global_step`` continues the old one: the run would stop at
    that count mid-epoch (or go on past the epochs). The rest of the resumed epoch and every later
    planned epoch, in windows of the new geometry, are added to ``global_step`` instead.
    """
    per_epoch = plan.num_update_steps_per_epoch
    accumulation = max(int(plan.gradient_accumulation_steps), 1)
    if per_epoch <= 0 or plan.steps_in_epoch <= 0:
        return int(plan.max_steps)
    if epoch_ended:
        epoch_index, batches_in_epoch = epoch_index + 1, 0
    if epoch_index >= plan.num_train_epochs:
        return global_step
    left_in_epoch = max(0, plan.steps_in_epoch - batches_in_epoch)
    later_epochs = plan.num_train_epochs - epoch_index - 1
    return global_step + -(-left_in_epoch // accumulation) + later_epochs * per_epoch
