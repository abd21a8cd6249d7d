"""report_to="jsonl" / "csv": the files hold exactly the log history, readable mid-run, resumable."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from statetrain import TrainerCallback
from statetrain.callbacks.reporting import read_csv, read_jsonl
from tests.callbacks.reporting.runs import train_tiny


def _same_entries(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [sorted(e) for e in got] == [sorted(e) for e in expected]
    for g, e in zip(got, expected, strict=True):
        for key, value in e.items():
            assert math.isclose(g[key], value, rel_tol=1e-9) if isinstance(value, float) else g[key] == value, key


def test_jsonl_holds_the_log_history_one_line_per_log_event(tmp_path: Path) -> None:
    trainer = train_tiny(tmp_path, "jsonl")
    _same_entries(read_jsonl(tmp_path / "log_history.jsonl"), trainer.state.log_history)


def test_jsonl_is_readable_while_the_run_goes(tmp_path: Path) -> None:
    seen: list[int] = []

    class Reader(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            seen.append(len(read_jsonl(tmp_path / "log_history.jsonl")))

    from statetrain import Trainer, TrainingArguments
    from tests.helpers import TinyRegressor, regression_rows

    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4, logging_steps=1,
        report_to="jsonl", disable_tqdm=True, use_cpu=True,
    )  # fmt: skip
    Trainer(model=TinyRegressor(), args=args, train_dataset=regression_rows(16), callbacks=[Reader()]).train()
    # on_step_end comes before that step's log: each step sees the lines of the steps before it
    assert seen == [0, 1, 2, 3]


def test_csv_holds_the_log_history_with_the_union_of_keys(tmp_path: Path) -> None:
    trainer = train_tiny(tmp_path, ["csv"])
    _same_entries(read_csv(tmp_path / "log_history.csv"), trainer.state.log_history)
    header = (tmp_path / "log_history.csv").read_text().splitlines()[0].split(",")
    assert {"loss", "learning_rate", "eval_loss", "train_runtime", "step", "epoch"} <= set(header)


@pytest.mark.parametrize(("name", "reader"), [("jsonl", read_jsonl), ("csv", read_csv)])
def test_a_resumed_run_continues_the_file_without_repeating_steps(tmp_path: Path, name: str, reader: Any) -> None:
    whole = train_tiny(tmp_path, name)
    resumed = train_tiny(tmp_path, name, resume=str(tmp_path / "checkpoint-4"))
    entries = reader(tmp_path / f"log_history.{name}")
    _same_entries(entries, resumed.state.log_history)
    assert [e["step"] for e in entries if "loss" in e] == [1, 2, 3, 4, 5, 6]
    _same_entries(
        [{k: v for k, v in e.items() if "runtime" not in k and "per_second" not in k} for e in entries],
        [{k: v for k, v in e.items() if "runtime" not in k and "per_second" not in k} for e in whole.state.log_history],
    )


def test_a_new_run_in_the_same_folder_starts_a_new_file(tmp_path: Path) -> None:
    train_tiny(tmp_path, "jsonl", max_steps=3)
    second = train_tiny(tmp_path, "jsonl", max_steps=2, eval_strategy="no")
    _same_entries(read_jsonl(tmp_path / "log_history.jsonl"), second.state.log_history)
