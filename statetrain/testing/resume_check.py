"""Check that a loop resumes bit-exactly: train once through, resume from one of its checkpoints, compare.

For users of custom machines: a state that forgets to persist something (a cursor, a second
optimizer, a random draw outside the checkpointed generators) shows up here as a named
difference, not as a slightly different loss curve weeks later.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from statetrain.testing.oracles import untimed
from statetrain.trainer.trainer import Trainer

__all__ = ["ResumeComparison", "assert_resumes_bit_exactly", "compare_trainers"]


@dataclass
class ResumeComparison:
    """The uninterrupted run, the resumed run, and every difference found between them."""

    uninterrupted: Trainer
    resumed: Trainer
    checkpoint: Path
    differences: list[str]


def _diff(a: Any, b: Any, where: str, out: list[str]) -> None:
    if torch.is_tensor(a) or torch.is_tensor(b):
        same = torch.is_tensor(a) and torch.is_tensor(b) and a.dtype == b.dtype and a.shape == b.shape
        if not (same and torch.equal(a.cpu(), b.cpu())):
            out.append(f"{where}: tensors differ")
        return
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                out.append(f"{where}.{key}: present in only one run")
            else:
                _diff(a[key], b[key], f"{where}.{key}", out)
        return
    if isinstance(a, Sequence) and isinstance(b, Sequence) and not isinstance(a, str):
        if len(a) != len(b):
            out.append(f"{where}: lengths {len(a)} and {len(b)}")
            return
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(x, y, f"{where}[{index}]", out)
        return
    if a != b and not (isinstance(a, float) and isinstance(b, float) and a != a and b != b):
        out.append(f"{where}: {a!r} != {b!r}")


def _state_of(trainer: Trainer) -> dict[str, Any]:
    run = trainer.run_context
    if run is None:
        raise ValueError("compare_trainers needs trainers that have trained")
    model = trainer.accelerator.unwrap_model(trainer.model)
    optimizer = getattr(run.optimizer, "optimizer", run.optimizer)
    state = trainer.state
    return {
        "model": dict(model.state_dict()),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "lr_scheduler": run.lr_scheduler.state_dict() if run.lr_scheduler is not None else None,
        "checkpointables": {name: obj.state_dict() for name, obj in run.checkpointables.items()},
        "custom_state": run.engine.custom,
        "global_step": state.global_step,
        "epoch": state.epoch,
        "log_history": [untimed(entry) for entry in state.log_history],
        "best_metric": state.best_metric,
        "num_input_tokens_seen": state.num_input_tokens_seen,
    }


def compare_trainers(a: Trainer, b: Trainer) -> list[str]:
    """Every difference between two finished trainers: weights, optimizer, schedule, registered
    objects, custom state, counters and the untimed log history (bitwise for tensors)."""
    out: list[str] = []
    _diff(_state_of(a), _state_of(b), "run", out)
    return out


def assert_resumes_bit_exactly(
    make_trainer: Callable[[str], Trainer],
    checkpoint_step: int,
    workdir: str | Path,
    train_kwargs: Mapping[str, Any] | None = None,
) -> ResumeComparison:
    """Train ``make_trainer(dir)`` through; resume a second one from its ``checkpoint-<checkpoint_step>``.

    ``make_trainer`` must build the same run each time (seeded model, same data and arguments)
    with a save schedule that writes the checkpoint asked for. Raises ``AssertionError`` listing
    each difference between the two finished runs; returns both for further assertions.
    """
    workdir = Path(workdir)
    extra = dict(train_kwargs or {})
    uninterrupted = make_trainer(str(workdir / "uninterrupted"))
    uninterrupted.train(**extra)
    checkpoint = workdir / "uninterrupted" / f"checkpoint-{checkpoint_step}"
    if not checkpoint.is_dir():
        found = sorted(p.name for p in (workdir / "uninterrupted").glob("checkpoint-*"))
        raise AssertionError(f"the uninterrupted run wrote no {checkpoint.name} (it wrote {found})")
    resumed = make_trainer(str(workdir / "resumed"))
    resumed.train(resume_from_checkpoint=str(checkpoint), **extra)
    differences = compare_trainers(uninterrupted, resumed)
    if differences:
        shown = "\n  ".join(differences[:20])
        more = f"\n  ... and {len(differences) - 20} more" if len(differences) > 20 else ""
        raise AssertionError(f"resuming from {checkpoint.name} diverged:\n  {shown}{more}")
    return ResumeComparison(uninterrupted, resumed, checkpoint, differences)
