"""The same run reported by transformers' own integration callbacks and by statetrain's: same
metric names at the same steps in MLflow and in W&B's offline run file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.callbacks.reporting.runs import finish_wandb, set_offline_trackers, train_tiny, wandb_records
from tests.helpers import TinyRegressor, regression_rows

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.slow


@pytest.fixture
def offline_trackers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "trackers"
    root.mkdir()
    set_offline_trackers(root, monkeypatch)
    return root


def _train_hf(output_dir: Path, report_to: str, **options: Any) -> None:
    """What ``train_tiny`` runs, on ``transformers.Trainer``."""
    args = transformers.TrainingArguments(
        output_dir=str(output_dir), max_steps=6, per_device_train_batch_size=4, logging_steps=1,
        eval_strategy="steps", eval_steps=3, save_steps=2, learning_rate=0.05, report_to=report_to,
        disable_tqdm=True, use_cpu=True, seed=3, **options,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.Trainer(
        model=TinyRegressor(), args=args, train_dataset=regression_rows(48), eval_dataset=regression_rows(8, seed=1)
    ).train()


def _mlflow_series(run_name: str) -> tuple[dict[str, list[int]], set[str]]:
    import mlflow

    client = mlflow.MlflowClient()
    run = next(r for r in client.search_runs(["0"]) if r.info.run_name == run_name)
    series = {key: sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) for key in run.data.metrics}
    return series, set(run.data.params)


def test_mlflow_metrics_and_params_match_transformers(offline_trackers: Path, tmp_path: Path) -> None:
    import mlflow

    mlflow.set_tracking_uri(f"file:{offline_trackers / 'mlruns'}")
    mlflow.set_experiment(experiment_id="0")
    _train_hf(tmp_path / "hf", "mlflow", run_name="hf")
    train_tiny(tmp_path / "ours", "mlflow", run_name="ours")
    theirs, their_params = _mlflow_series("hf")
    ours, our_params = _mlflow_series("ours")
    assert ours == theirs
    transformers_only = their_params - our_params
    assert not transformers_only, f"params transformers logs and statetrain does not: {sorted(transformers_only)}"


def _wandb_history(folder: Path) -> dict[str, list[int]]:
    run_file = next(folder.glob("run-*.wandb"))
    series: dict[str, list[int]] = {}
    for record in wandb_records(run_file):
        if record.WhichOneof("record_type") != "history":
            continue
        row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
        for key in row:
            if not key.startswith("_"):
                series.setdefault(key, []).append(row["train/global_step"])
    return series


def test_wandb_history_matches_transformers(offline_trackers: Path, tmp_path: Path) -> None:
    import wandb

    _train_hf(tmp_path / "hf", "wandb", run_name="hf")
    hf_id = wandb.run.id
    finish_wandb()
    train_tiny(tmp_path / "ours", "wandb", run_name="ours")
    our_id = wandb.run.id
    finish_wandb()
    root = offline_trackers / "wandb"
    theirs = _wandb_history(next(root.glob(f"offline-run-*-{hf_id}")))
    ours = _wandb_history(next(root.glob(f"offline-run-*-{our_id}")))
    assert ours == theirs
