"""Accumulation windows at the end of a pass over iterable data.

A pass that runs out in the middle of a window closes that window with its own optimizer step,
exactly as the last (shorter) window of a map-style epoch does; its gradients never reach the next
pass, and a pass shorter than one window still trains. Transformers' Trainer instead leaves such a
window without a step, carries its gradients into the next pass, and never steps at all when a pass
is shorter than ``gradient_accumulation_steps`` (see docs/differences.md).

The reference is the same rows as a map-style dataset read in order
(``train_sampling_strategy="sequential"``), whose epochs end with the remainder window by plan.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from statetrain import Trainer, TrainerCallback, TrainingArguments
from tests.helpers import RowStream, TinyRegressor, regression_rows


class StopRunaway(TrainerCallback):
    """Ends a run that keeps starting passes without taking optimizer steps (the old hang)."""

    def __init__(self) -> None:
        self.epochs = 0
        self.steps_per_epoch: list[int] = []
        self._at_begin = 0

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.epochs += 1
        self._at_begin = state.global_step
        if self.epochs > 12:
            control.should_training_stop = True

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.steps_per_epoch.append(state.global_step - self._at_begin)


def train(tmp_path: Path, data: Any, *, accumulation: int, callbacks: list[Any] | None = None, **extra: Any) -> Trainer:
    torch.manual_seed(0)
    args = TrainingArguments(
        str(tmp_path),
        per_device_train_batch_size=1,
        gradient_accumulation_steps=accumulation,
        learning_rate=0.1,
        logging_steps=1,
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        report_to="none",
        train_sampling_strategy="sequential",
        **extra,
    )
    trainer = Trainer(model=TinyRegressor(), args=args, train_dataset=data, callbacks=callbacks)
    trainer.train()
    return trainer


def losses(trainer: Trainer) -> list[tuple[int, float]]:
    return [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e]


def test_a_pass_shorter_than_one_window_still_takes_optimizer_steps(tmp_path: Path) -> None:
    rows = regression_rows(3, seed=1)
    guard = StopRunaway()
    streamed = train(tmp_path / "it", RowStream(rows), accumulation=4, max_steps=2, callbacks=[guard])
    assert streamed.state.global_step == 2, f"{guard.epochs} passes, steps per pass {guard.steps_per_epoch}"
    assert guard.epochs == 2 and guard.steps_per_epoch == [1, 1]

    mapped = train(tmp_path / "map", rows, accumulation=4, num_train_epochs=2)
    assert mapped.state.global_step == 2
    for a, b in zip(mapped.model.parameters(), streamed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert losses(streamed) == losses(mapped)


def test_the_unfinished_window_of_a_pass_does_not_carry_into_the_next(tmp_path: Path) -> None:
    rows = regression_rows(5, seed=2)  # windows of 2 per pass: [2, 2, 1]
    guard = StopRunaway()
    streamed = train(tmp_path / "it", RowStream(rows), accumulation=2, max_steps=6, callbacks=[guard])
    assert guard.steps_per_epoch == [3, 3]

    mapped = train(tmp_path / "map", rows, accumulation=2, num_train_epochs=2)
    assert mapped.state.global_step == streamed.state.global_step == 6
    for a, b in zip(mapped.model.parameters(), streamed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert losses(streamed) == losses(mapped)


def test_gradients_are_zero_when_a_pass_ends(tmp_path: Path) -> None:
    """Whatever the pass length, nothing of its last window is left in .grad for the next pass."""
    seen: list[bool] = []

    class GradsAtEpochEnd(TrainerCallback):
        def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            seen.append(all(p.grad is None or not p.grad.any() for p in model.parameters()))

    train(tmp_path, RowStream(regression_rows(7, seed=3)), accumulation=3, max_steps=7, callbacks=[GradsAtEpochEnd()])
    assert seen and all(seen), seen
