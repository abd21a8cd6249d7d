"""report_to="wandb" in offline mode: the run folder W&B writes, with HF's names, config and summary."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.callbacks.reporting.runs import assert_same_series, finish_wandb, train_tiny, wandb_records

pytestmark = pytest.mark.usefixtures("offline_trackers")


@pytest.fixture(autouse=True)
def _finish_wandb() -> Any:
    yield
    finish_wandb()


def _history_rows(run_file: Path) -> list[dict[str, Any]]:
    rows = []
    for record in wandb_records(run_file):
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            )
    return rows


def test_wandb_offline_run_folder_holds_hf_names_against_global_step(offline_trackers: Path, tmp_path: Path) -> None:
    import wandb

    trainer = train_tiny(tmp_path / "out", "wandb", run_name="tiny-run")
    run_id = wandb.run.id
    finish_wandb()
    folders = list((offline_trackers / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(folders) == 1
    rows = _history_rows(folders[0] / f"run-{run_id}.wandb")
    losses = [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e]
    assert_same_series([(r["train/global_step"], r["train/loss"]) for r in rows if "train/loss" in r], losses)
    assert [r["train/global_step"] for r in rows if "eval/loss" in r] == [3, 6]
    assert not any("train/train_runtime" in r or "train_runtime" in r for r in rows)  # summary only
    records = wandb_records(folders[0] / f"run-{run_id}.wandb")
    run_record = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run_record.display_name == "tiny-run" and run_record.project == "huggingface"
    config = {
        item.key: json.loads(item.value_json)
        for r in records
        if r.WhichOneof("record_type") == "config"
        for item in r.config.update
    }
    assert config["learning_rate"] == 0.05 and config["max_steps"] == 6
    summary = {
        item.key: json.loads(item.value_json)
        for r in records
        if r.WhichOneof("record_type") == "summary"
        for item in r.summary.update
    }
    assert summary["train_loss"] == pytest.approx(trainer.state.log_history[-1]["train_loss"])


def test_wandb_project_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import wandb

    monkeypatch.setenv("WANDB_PROJECT", "digits")
    train_tiny(tmp_path / "out", "wandb", max_steps=2, eval_strategy="no")
    assert wandb.run.project == "digits"


def test_a_resumed_run_continues_the_same_wandb_run_without_repeats(offline_trackers: Path, tmp_path: Path) -> None:
    import wandb

    out = tmp_path / "out"
    whole = train_tiny(out, "wandb")
    first = wandb.run.id
    finish_wandb()
    # W&B names an offline session's folder by the second it starts; a resume within the same second
    # (only a test is that fast) would reuse the first session's folder and file
    time.sleep(1.1)
    train_tiny(out, "wandb", resume=str(out / "checkpoint-4"))  # replays steps 5 and 6
    assert wandb.run.id == first
    finish_wandb()
    folders = sorted((offline_trackers / "wandb").glob(f"offline-run-*-{first}"))
    assert len(folders) == 2  # W&B keeps each offline session in its own folder; `wandb sync` joins them
    rows = [row for folder in folders for row in _history_rows(folder / f"run-{first}.wandb")]
    losses = [(e["step"], e["loss"]) for e in whole.state.log_history if "loss" in e]
    assert_same_series([(r["train/global_step"], r["train/loss"]) for r in rows if "train/loss" in r], losses)
    assert [r["train/global_step"] for r in rows if "eval/loss" in r] == [3, 6]


def test_a_second_train_call_logs_into_the_open_run(offline_trackers: Path, tmp_path: Path) -> None:
    import wandb

    from statetrain import Trainer, TrainingArguments
    from tests.helpers import TinyRegressor, regression_rows

    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=4, logging_steps=1,
        save_strategy="no", report_to="wandb", disable_tqdm=True, use_cpu=True,
    )  # fmt: skip
    trainer = Trainer(model=TinyRegressor(), args=args, train_dataset=regression_rows(16))
    trainer.train()
    trainer.train()  # HF keeps the W&B run open after train(): the second run logs into it
    run_id = wandb.run.id
    finish_wandb()
    folder = next((offline_trackers / "wandb").glob(f"offline-run-*-{run_id}"))
    rows = _history_rows(folder / f"run-{run_id}.wandb")
    assert [r["train/global_step"] for r in rows if "train/loss" in r] == [1, 2, 1, 2]
