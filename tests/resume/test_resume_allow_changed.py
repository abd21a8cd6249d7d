"""Resuming with a changed batch geometry: refused naming the change, or accepted by resume_allow_changed.

An accepted change resumes at the checkpoint's global_step with the resumed epoch's data position
recomputed in samples (rounded down to a whole window of the new accumulation): the samples the
resumed run trains on are the rest of the epoch's order, from that boundary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from statetrain import Trainer, TrainerCallback, TrainingArguments
from statetrain.checkpoint.resume_geometry import ResumeGeometryWarning
from statetrain.data.batches import default_data_collator
from statetrain.trainer.checkpoints import ResumeError
from tests.helpers import StopAfter, TinyRegressor, regression_rows

ROWS = 40


class Steps(TrainerCallback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.steps.append(state.global_step)


def rows() -> list[dict[str, Any]]:
    data = regression_rows(ROWS, seed=12)
    for index, row in enumerate(data):
        row["x"][0] = float(index)  # the first feature names the row
    return data


def build(
    out: Path,
    seen: list[int] | None = None,
    callbacks: list[Any] | None = None,
    data: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> Trainer:
    def collate(features: list[Any]) -> Any:
        if seen is not None:
            seen.extend(int(f["x"][0]) for f in features)
        return default_data_collator(features)

    settings: dict[str, Any] = {
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "num_train_epochs": 1,
        "save_strategy": "steps",
        "save_steps": 3,
        "logging_steps": 1,
        "learning_rate": 0.01,
        "use_cpu": True,
        "disable_tqdm": True,
        "report_to": "none",
        **extra,
    }
    torch.manual_seed(0)
    return Trainer(
        model=TinyRegressor(),
        args=TrainingArguments(str(out), **settings),
        train_dataset=data if data is not None else rows(),
        data_collator=collate,
        callbacks=callbacks,
    )


def epoch_order(tmp_path: Path) -> list[int]:
    order: list[int] = []
    build(tmp_path / "order", order, save_strategy="no").train()
    assert sorted(order) == list(range(ROWS))
    return order


def test_a_changed_batch_size_is_refused_naming_the_override(tmp_path: Path) -> None:
    build(tmp_path / "run", callbacks=[StopAfter(3)]).train()
    with pytest.raises(ResumeError) as info:
        build(tmp_path / "run", per_device_train_batch_size=2).train(resume_from_checkpoint=True)
    message = str(info.value)
    assert "per_device_train_batch_size: checkpoint 4, now 2" in message
    assert "resume_allow_changed=['per_device_train_batch_size']" in message


def test_an_accepted_batch_size_change_resumes_at_the_step_and_the_sample(tmp_path: Path) -> None:
    order = epoch_order(tmp_path)
    build(tmp_path / "run", callbacks=[StopAfter(3)]).train()  # 3 steps x 4 rows: 12 rows consumed
    seen: list[int] = []
    steps = Steps()
    resumed = build(
        tmp_path / "run",
        seen,
        [steps],
        per_device_train_batch_size=2,
        resume_allow_changed=["per_device_train_batch_size"],
    )
    with pytest.warns(ResumeGeometryWarning, match=r"per_device_train_batch_size: checkpoint 4, now 2"):
        resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-3"))
    assert seen == order[12:]  # the rest of the epoch, in its order, nothing replayed or skipped
    assert steps.steps[0] == 4 and resumed.state.global_step == 3 + (ROWS - 12) // 2
    assert resumed.state.train_batch_size == 2


def test_an_accepted_accumulation_change_restarts_at_the_window_boundary(tmp_path: Path) -> None:
    order = epoch_order(tmp_path)
    build(
        tmp_path / "run",
        callbacks=[StopAfter(2)],
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        save_steps=2,
    ).train()  # 2 steps x 2 micro-batches x 2 rows: 8 rows consumed
    seen: list[int] = []
    resumed = build(
        tmp_path / "run",
        seen,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=3,
        resume_allow_changed=["gradient_accumulation_steps"],
    )
    with pytest.warns(ResumeGeometryWarning):
        resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))
    # 8 rows = 4 micro-batches of 2; the last window boundary of 3 at or before them is 3: row 6
    # the budget is the epoch's samples: the 17 micro-batches left from row 6 take ceil(17 / 3) = 6
    # more steps (the last window is short), so global_step continues from 2 to 8 and no row is left out
    assert resumed.state.max_steps == 8 and resumed.state.global_step == 8
    assert seen == order[6:]


def test_an_accepted_dataset_length_change_continues_the_step_count(tmp_path: Path) -> None:
    build(tmp_path / "run", callbacks=[StopAfter(3)]).train()
    steps = Steps()
    longer = regression_rows(ROWS + 8, seed=13)
    resumed = build(tmp_path / "run", None, [steps], data=longer, resume_allow_changed=["dataset_length"])
    with pytest.warns(ResumeGeometryWarning, match=r"dataset_length: checkpoint 40, now 48"):
        resumed.train(resume_from_checkpoint=True)
    assert steps.steps[0] == 4 and resumed.state.global_step == (ROWS + 8) // 4


def test_allowing_one_change_does_not_allow_another(tmp_path: Path) -> None:
    build(tmp_path / "run", callbacks=[StopAfter(3)]).train()
    trainer = build(
        tmp_path / "run",
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        resume_allow_changed=["per_device_train_batch_size"],
    )
    with pytest.raises(ResumeError, match=r"gradient_accumulation_steps: checkpoint 1, now 2") as info:
        trainer.train(resume_from_checkpoint=True)
    assert "resume_allow_changed=['gradient_accumulation_steps']" in str(info.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["per_device_batch"], "unknown name 'per_device_batch'"),
        (["world_size"], "cannot include 'world_size'"),
        ("dataset_length", "valid list"),
    ],
)
def test_bad_resume_allow_changed_names_the_field(tmp_path: Path, value: Any, expected: str) -> None:
    with pytest.raises(ValueError, match="resume_allow_changed") as info:
        TrainingArguments(str(tmp_path), resume_allow_changed=value)
    assert expected in str(info.value)


def test_a_shorter_dataset_than_the_position_ends_that_epoch_and_goes_on(tmp_path: Path) -> None:
    build(tmp_path / "run", callbacks=[StopAfter(6)], save_steps=6, num_train_epochs=2).train()  # 24 rows
    steps = Steps()
    shorter = regression_rows(20, seed=14)  # 5 batches an epoch: epoch 0 is already past its end
    resumed = build(
        tmp_path / "run", None, [steps], data=shorter, num_train_epochs=2, resume_allow_changed=["dataset_length"]
    )
    with pytest.warns(ResumeGeometryWarning, match=r"dataset_length: checkpoint 40, now 20"):
        resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-6"))
    # epoch 0 is over; the budget is the rest of the epochs' samples: all 5 batches of epoch 1
    assert steps.steps == [7, 8, 9, 10, 11] and resumed.state.epoch == 2
