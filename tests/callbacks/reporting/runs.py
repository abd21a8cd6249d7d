"""A tiny training run, shared by the reporting tests, and readers for what trackers wrote."""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import Any

import torch

from statetrain import Trainer, TrainingArguments
from tests.helpers import TinyRegressor, regression_rows


def train_tiny(
    output_dir: Path, report_to: Any, resume: str | None = None, max_steps: int = 6, **options: Any
) -> Trainer:
    """6 steps of a tiny MLP, logging every step, evaluating every 3, saving every 2."""
    settings: dict[str, Any] = dict(
        output_dir=str(output_dir),
        max_steps=max_steps,
        per_device_train_batch_size=4,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=3,
        save_steps=2,
        learning_rate=0.05,
        report_to=report_to,
        disable_tqdm=True,
        use_cpu=True,
        seed=3,
    )
    settings.update(options)
    torch.manual_seed(0)
    trainer = Trainer(
        model=TinyRegressor(),
        args=TrainingArguments(**settings),
        train_dataset=regression_rows(48),
        eval_dataset=regression_rows(8, seed=1),
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def set_offline_trackers(root: Path, monkeypatch: Any) -> None:
    """Environment for every tracker to write under ``root`` and never reach a server."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(root))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{root / 'mlruns'}")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("TRACKIO_DIR", str(root / "trackio"))
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    if "wandb" in sys.modules:
        # W&B keeps the settings of its first setup (WANDB_DIR included) in a process-wide singleton;
        # tearing it down makes the next wandb.init read this environment, whoever calls it
        sys.modules["wandb"].teardown()


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series under ``folder``, read back by TensorBoard's own ``EventAccumulator``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def wandb_records(run_file: Path) -> list[Any]:
    """The protobuf records of an offline ``run-<id>.wandb`` file (W&B's level-db style log)."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B", f"{run_file} is not a W&B run file"
    block, position, pending, records = 32768, 7, b"", []
    while position + 7 <= len(data):
        room = block - position % block
        if room < 7:  # the block's tail is padding
            position += room
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):  # full, or the last piece
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
        if kind == 0 and length == 0:
            break
    return records


def assert_same_series(got: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    """Same steps in the same order, values equal to float32 rounding."""
    import pytest

    assert [s for s, _ in got] == [s for s, _ in expected]
    assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6)


def finish_wandb() -> None:
    """End the W&B run and its service: offline run files are complete on disk only after that."""
    import wandb

    wandb.finish()
    wandb.teardown()
