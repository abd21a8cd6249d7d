"""The declared table alone decides the flow: deleting a transition or a guard changes the run."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from statetrain import Trainer, TrainerCallback, TrainingArguments, default_machine
from statetrain.engine.machine import MachineSpec
from tests.helpers import TinyRegressor, regression_rows


class StopAt(TrainerCallback):
    """Requests a training stop on a given event at a given global step."""

    def __init__(self, step: int, on_substep: bool = False) -> None:
        self.step = step
        self.on_substep = on_substep

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self.on_substep and state.global_step == self.step:
            control.should_training_stop = True

    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.on_substep and state.global_step == self.step:
            control.should_training_stop = True


class Events(TrainerCallback):
    def __init__(self) -> None:
        self.names: list[str] = []

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.names.append("epoch_begin")

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.names.append("optimizer_step")


def run(tmp_path: Path, machine: MachineSpec | None, callbacks: list[Any], **overrides: Any) -> Trainer:
    options: dict[str, Any] = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_train_epochs=3,
        learning_rate=0.05,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=1,
        seed=3,
    )
    options.update(overrides)
    torch.manual_seed(0)
    trainer = Trainer(
        model=TinyRegressor(),
        args=TrainingArguments(**options),
        train_dataset=regression_rows(16),
        callbacks=callbacks,
        machine=machine,
    )
    trainer.train()
    return trainer


def without_guard(spec: MachineSpec, source: str, trigger: str, label: str) -> MachineSpec:
    edited = []
    for t in spec.transitions:
        if t.source == source and t.trigger == trigger:
            kept = tuple(g for g in t.guards if g.label != label)
            assert len(kept) == len(t.guards) - 1, f"guard {label!r} not on {source}.{trigger}"
            t = dataclasses.replace(t, guards=kept)
        edited.append(t)
    return MachineSpec(spec.states.values(), edited, spec.initial, spec.final)


def test_deleting_the_log_transition_removes_step_logs(tmp_path: Path) -> None:
    full = run(tmp_path, None, [])
    assert sum("loss" in e for e in full.state.log_history) == 12
    cut = run(tmp_path, default_machine().without_transition("optimize", "log"), [])
    # only the epoch-end route can still log: once per epoch, from the flag the last step left set
    assert [e["step"] for e in cut.state.log_history if "loss" in e] == [4, 8, 12]


def test_deleting_the_mid_window_stop_transition_lets_the_window_finish(tmp_path: Path) -> None:
    events_full, events_cut = Events(), Events()
    run(tmp_path, None, [StopAt(1, on_substep=True), events_full], gradient_accumulation_steps=2)
    cut = default_machine().without_transition("accumulate", "end_epoch")
    run(tmp_path, cut, [StopAt(1, on_substep=True), events_cut], gradient_accumulation_steps=2)
    # HF drops the window when a stop arrives at on_substep_end: one optimizer step only
    assert events_full.names.count("optimizer_step") == 1
    assert events_cut.names.count("optimizer_step") > 1


def test_deleting_the_stop_guard_keeps_training_after_a_stop(tmp_path: Path) -> None:
    events_full, events_cut = Events(), Events()
    full = run(tmp_path, None, [StopAt(2), events_full])
    spec = without_guard(default_machine(), "epoch_end", "next_epoch", "not should_training_stop")
    spec = without_guard(spec, "log", "next_epoch", "not should_training_stop")
    cut = run(tmp_path, spec, [StopAt(2), events_cut])
    assert full.state.global_step == 2 and events_full.names.count("epoch_begin") == 1
    assert events_cut.names.count("epoch_begin") == 3
    assert cut.state.global_step > 2


def test_deleting_a_guard_that_orders_transitions_is_caught_by_validation(tmp_path: Path) -> None:
    """init's only guarded exit is 'epochs remain'; without it the unguarded edge shadows 'finish'."""
    with pytest.raises(ValueError, match="can never be taken"):
        Trainer(
            model=TinyRegressor(),
            args=TrainingArguments(str(tmp_path), save_strategy="no", use_cpu=True, disable_tqdm=True),
            machine=without_guard(default_machine(), "init", "start", "epochs remain"),
        )
