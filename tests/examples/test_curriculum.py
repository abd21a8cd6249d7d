"""The curriculum example: each epoch trains on its stage, and a resume rebuilds the right stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from statetrain import Trainer, TrainerCallback, TrainingArguments
from statetrain.examples.curriculum import CurriculumState, curriculum_machine
from statetrain.testing import assert_resumes_bit_exactly
from tests.helpers import TinyRegressor, regression_rows

STAGES = [regression_rows(24, seed=20 + k) for k in range(3)]


class StageLog(TrainerCallback):
    """Which stage each epoch's loader and each step's batch came from."""

    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.batches: list[int] = []

    def on_epoch_begin(self, args: Any, state: Any, control: Any, train_dataloader: Any = None, **kw: Any) -> None:
        self.epochs.append(next(k for k, s in enumerate(STAGES) if train_dataloader.dataset is s))

    def on_after_backward(self, args: Any, state: Any, control: Any, inputs: Any = None, **kw: Any) -> None:
        row = inputs["x"][0]
        self.batches.append(next(k for k, s in enumerate(STAGES) if any(torch.equal(row, r["x"]) for r in s)))


def make_trainer(output_dir: str, epochs: int = 4) -> Trainer:
    torch.manual_seed(0)
    args = TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=5,  # 24 rows: the last batch of each epoch is short
        gradient_accumulation_steps=2,
        num_train_epochs=epochs,
        learning_rate=0.05,
        logging_steps=2,
        save_strategy="steps",
        save_steps=2,
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        seed=11,
    )
    return Trainer(
        model=TinyRegressor(),
        args=args,
        train_dataset=STAGES[0],
        machine=curriculum_machine(STAGES),
        callbacks=[StageLog()],
    )


def log_of(trainer: Trainer) -> StageLog:
    return next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, StageLog))


def test_each_epoch_trains_on_its_stage_and_the_last_stage_repeats(tmp_path: Path) -> None:
    trainer = make_trainer(str(tmp_path))
    trainer.train()
    log = log_of(trainer)
    assert log.epochs == [0, 1, 2, 2]
    assert log.batches == [stage for stage in (0, 1, 2, 2) for _ in range(5)]  # 5 micro-batches per epoch
    assert trainer.run_context.engine.custom["curriculum"] == {"stage": 2}
    assert trainer.state.global_step == 4 * 3


@pytest.mark.parametrize("cut", [4, 6, 8])  # mid-epoch in stage 1, at the end of stage 1, mid-epoch in stage 2
def test_resume_rebuilds_the_stage_and_is_bit_exact(tmp_path: Path, cut: int) -> None:
    result = assert_resumes_bit_exactly(make_trainer, cut, tmp_path)
    resumed = log_of(result.resumed)
    epoch_of_cut = (cut - 1) // 3  # a save at an epoch's last step comes before its epoch end
    assert resumed.epochs == [min(k, 2) for k in range(epoch_of_cut, 4)]


def test_stages_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="same length"):
        CurriculumState([regression_rows(8), regression_rows(9)])
