"""Only the main process reports: a replica's callbacks write nothing and start no tracker run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from statetrain import TrainerControl, TrainerState, TrainingArguments
from statetrain.callbacks.reporting import reporting_callbacks

pytestmark = pytest.mark.usefixtures("offline_trackers")


def _drive(callbacks: list[Any], args: TrainingArguments, state: TrainerState) -> None:
    """The events a short run fires, in HF order, to every callback."""
    control = TrainerControl()
    for callback in callbacks:
        callback.on_init_end(args, state, control)
        callback.on_train_begin(args, state, control, model=None)
        callback.on_log(args, state, control, logs={"loss": 1.0, "learning_rate": 0.1}, model=None)
        callback.on_train_end(args, state, control)


def test_a_replica_reports_nothing(tmp_path: Path) -> None:
    import mlflow
    import wandb

    args = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True)
    replica = TrainerState(global_step=1, is_world_process_zero=False, is_local_process_zero=False)
    _drive(reporting_callbacks(["jsonl", "csv", "tensorboard", "mlflow", "wandb", "codecarbon"]), args, replica)
    assert not (tmp_path / "out").exists()
    assert wandb.run is None and mlflow.active_run() is None
    assert not list((tmp_path / "trackers").rglob("*.wandb"))


def test_the_main_process_reports(tmp_path: Path) -> None:
    args = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True)
    main = TrainerState(global_step=1)
    _drive(reporting_callbacks(["jsonl", "tensorboard"]), args, main)
    assert (tmp_path / "out" / "log_history.jsonl").read_text().count("\n") == 1
    assert list((tmp_path / "out" / "runs").rglob("events.out.tfevents.*"))
