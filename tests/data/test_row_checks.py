"""A wrong training dataset fails when train() starts, naming the problem and the column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from statetrain import Trainer, TrainerCallback, TrainingArguments
from tests.helpers import TinyRegressor, regression_rows


class Steps(TrainerCallback):
    def __init__(self) -> None:
        self.steps = 0

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.steps += 1


def train(tmp_path: Path, data: Any) -> Steps:
    steps = Steps()
    args = TrainingArguments(str(tmp_path), per_device_train_batch_size=2, max_steps=2, use_cpu=True, report_to="none")
    Trainer(model=TinyRegressor(), args=args, train_dataset=data, callbacks=[steps]).train()
    return steps


def test_a_dataset_of_strings_is_refused_naming_the_row(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"row 0 is a str \('a sentence'\), not a dict of model inputs"):
        train(tmp_path, ["a sentence", "another one"])


def test_rows_without_the_model_inputs_name_the_missing_column(tmp_path: Path) -> None:
    rows = [{"features": torch.zeros(8), "labels": 1} for _ in range(4)]
    with pytest.raises(
        ValueError, match=r"lack the model's input column\(s\) \['x'\].*TinyRegressor.*\['features', 'labels'\]"
    ):
        train(tmp_path, rows)


def test_string_labels_are_refused_naming_the_column(tmp_path: Path) -> None:
    rows = [{"x": row["x"], "label": "cat"} for row in regression_rows(4)]
    with pytest.raises(ValueError, match=r"column 'label' holds strings \(row 0: 'cat'\)"):
        train(tmp_path, rows)


def test_an_empty_dataset_is_refused_before_any_step(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"train_dataset is empty \(0 rows\)"):
        train(tmp_path, [])


def test_good_rows_still_train(tmp_path: Path) -> None:
    assert train(tmp_path, regression_rows(8)).steps == 2
