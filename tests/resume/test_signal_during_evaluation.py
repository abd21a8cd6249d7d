"""A signal during an evaluation lets the evaluation finish, then the run stops with a checkpoint."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from statetrain import Trainer, TrainerCallback, TrainingArguments
from statetrain.context.preemption import TrainingPreempted
from tests.helpers import TinyRegressor, regression_rows


class SignalDuringEvaluation(TrainerCallback):
    """Sends SIGTERM to this process at the first prediction step of the evaluation at ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.sent = False
        self.prediction_steps_after = 0
        self.evaluations: list[int] = []

    def on_prediction_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.sent:
            self.prediction_steps_after += 1
        elif state.global_step == self.step:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.evaluations.append(state.global_step)


def test_sigterm_mid_evaluation_finishes_it_then_checkpoints(tmp_path: Path) -> None:
    probe = SignalDuringEvaluation(step=2)
    trainer = Trainer(
        model=TinyRegressor(),
        args=TrainingArguments(
            str(tmp_path),
            per_device_train_batch_size=4,
            per_device_eval_batch_size=2,
            max_steps=6,
            eval_strategy="steps",
            eval_steps=2,
            save_strategy="no",
            use_cpu=True,
            disable_tqdm=True,
            report_to="none",
        ),
        train_dataset=regression_rows(40),
        eval_dataset=regression_rows(8, seed=4),
        callbacks=[probe],
    )
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingPreempted) as stop:
        trainer.train()
    assert probe.prediction_steps_after == 3  # the other three batches of that evaluation still ran
    assert probe.evaluations == [2]  # it completed (on_evaluate), and no later evaluation started
    assert stop.value.checkpoint == tmp_path / "checkpoint-2" and stop.value.checkpoint.is_dir()
    assert signal.getsignal(signal.SIGTERM) is before  # the run's handler is gone again
