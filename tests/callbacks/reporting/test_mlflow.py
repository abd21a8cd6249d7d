"""report_to="mlflow" against a real MLflow local file store: params, metrics, run name, resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.callbacks.reporting.runs import assert_same_series, train_tiny


@pytest.fixture(autouse=True)
def _fresh_mlflow_store(offline_trackers: Path) -> None:
    """MLflow keeps its tracking URI and active experiment per process: point both at this test's store."""
    import mlflow

    mlflow.set_tracking_uri(f"file:{offline_trackers / 'mlruns'}")
    mlflow.set_experiment(experiment_id="0")


def _only_run(mlflow: object) -> object:
    runs = mlflow.MlflowClient().search_runs(experiment_ids=["0"])  # type: ignore[attr-defined]
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def _history(client: object, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]  # type: ignore[attr-defined]


def test_mlflow_store_holds_the_params_and_metrics(tmp_path: Path) -> None:
    import mlflow

    trainer = train_tiny(tmp_path / "out", "mlflow", run_name="tiny-run")
    run = _only_run(mlflow)
    assert run.info.run_name == "tiny-run"
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["learning_rate"] == "0.05" and params["max_steps"] == "6" and params["run_name"] == "tiny-run"
    client = mlflow.MlflowClient()
    losses = [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e]
    assert_same_series(_history(client, run.info.run_id, "loss"), losses)
    assert [s for s, _ in _history(client, run.info.run_id, "eval_loss")] == [3, 6]
    assert [s for s, _ in _history(client, run.info.run_id, "train_loss")] == [6]
    assert "grad_norm" in run.data.metrics and "learning_rate" in run.data.metrics


def test_mlflow_experiment_name_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "digits")
    train_tiny(tmp_path / "out", "mlflow", max_steps=2, eval_strategy="no")
    experiment = mlflow.MlflowClient().get_experiment_by_name("digits")
    assert experiment is not None
    assert len(mlflow.MlflowClient().search_runs(experiment_ids=[experiment.experiment_id])) == 1


def test_a_resumed_run_continues_the_same_mlflow_run_without_repeats(tmp_path: Path) -> None:
    import mlflow

    out = tmp_path / "out"
    whole = train_tiny(out, "mlflow")
    train_tiny(out, "mlflow", resume=str(out / "checkpoint-4"))
    run = _only_run(mlflow)
    client = mlflow.MlflowClient()
    losses = [(e["step"], e["loss"]) for e in whole.state.log_history if "loss" in e]
    assert_same_series(_history(client, run.info.run_id, "loss"), losses)
    assert [s for s, _ in _history(client, run.info.run_id, "eval_loss")] == [3, 6]
