"""Resumed runs whose traces need the checkpoint's facts: an early-ended epoch, a log owed at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from statetrain import Trainer, TrainerCallback, TrainingArguments
from statetrain.testing.grammar import GrammarError, check_trace
from statetrain.testing.recorder import TraceRecorder
from tests.helpers import TinyRegressor, regression_rows


class StopEpochEarly(TrainerCallback):
    """Ends epoch 1 after its second step (should_epoch_stop)."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 6:
            control.should_epoch_stop = True


def make(output_dir: Path, recorder: TraceRecorder, **overrides: Any) -> Trainer:
    torch.manual_seed(0)
    settings: dict[str, Any] = {
        "per_device_train_batch_size": 4,
        "num_train_epochs": 3,
        "report_to": [],
        "disable_tqdm": True,
        "use_cpu": True,
        **overrides,
    }
    args = TrainingArguments(output_dir=str(output_dir), **settings)
    return Trainer(model=TinyRegressor(), args=args, train_dataset=regression_rows(16), callbacks=[recorder])


def engine_facts(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / "engine_state.json").read_text())


def test_resume_after_an_epoch_that_ended_early_needs_the_first_epoch_index(tmp_path: Path) -> None:
    first = make(tmp_path / "a", TraceRecorder(), save_strategy="epoch", logging_steps=100)
    first.add_callback(StopEpochEarly())
    first.train()
    checkpoint = tmp_path / "a" / "checkpoint-6"  # epoch 1 ended at 1.5
    facts = engine_facts(checkpoint)
    assert facts["epoch_ended"] and facts["epoch_index"] == 1
    recorder = TraceRecorder()
    make(tmp_path / "b", recorder, save_strategy="epoch", logging_steps=100).train(
        resume_from_checkpoint=str(checkpoint)
    )
    assert recorder.trace[recorder.names.index("on_epoch_begin")] == ("on_epoch_begin", 6, 1.5)
    with pytest.raises(GrammarError, match="epoch must be"):
        check_trace(recorder.trace, steps_in_epoch=4)
    check_trace(recorder.trace, steps_in_epoch=4, first_epoch_index=facts["epoch_index"] + 1)


def test_resume_that_logs_at_once_needs_the_last_logged_step(tmp_path: Path) -> None:
    first = make(tmp_path / "a", TraceRecorder(), logging_strategy="epoch", save_strategy="steps", save_steps=4)
    first.train()
    checkpoint = tmp_path / "a" / "checkpoint-4"  # the epoch's last step, saved before its epoch end
    facts = engine_facts(checkpoint)
    assert facts["globalstep_last_logged"] == 0
    recorder = TraceRecorder()
    resumed = make(tmp_path / "b", recorder, logging_strategy="epoch", save_strategy="steps", save_steps=4)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert recorder.names[1:5] == ["on_train_begin", "on_epoch_begin", "on_epoch_end", "on_log"]
    with pytest.raises(GrammarError, match="needs global_step to have moved"):
        check_trace(recorder.trace, steps_in_epoch=4)
    first_epoch = facts["epoch_index"] + facts["epoch_ended"]  # 0: the epoch is done but not ended
    with pytest.raises(GrammarError, match="needs global_step to have moved"):
        check_trace(recorder.trace, steps_in_epoch=4, first_epoch_index=first_epoch)
    check_trace(
        recorder.trace,
        steps_in_epoch=4,
        first_epoch_index=first_epoch,
        last_logged_step=facts["globalstep_last_logged"],
    )


def test_hints_that_contradict_the_trace_are_errors() -> None:
    trace = [("on_train_begin", 4, 1.0), ("on_log", 4, 1.0), ("on_train_end", 4, 1.0)]
    with pytest.raises(GrammarError, match="last_logged_step 9 lies after"):
        check_trace(trace, last_logged_step=9)
