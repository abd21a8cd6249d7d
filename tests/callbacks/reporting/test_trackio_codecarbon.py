"""report_to="trackio" (local store) and "codecarbon" (emissions.csv), both offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.callbacks.reporting.runs import train_tiny

pytestmark = pytest.mark.usefixtures("offline_trackers")


def test_trackio_local_store_holds_hf_names(tmp_path: Path) -> None:
    import trackio

    project = f"statetrain-{tmp_path.name}"  # trackio reads TRACKIO_DIR once, at import: keep projects apart
    trainer = train_tiny(tmp_path / "out", "trackio", run_name="tiny-run", project=project)
    logs = trackio.SQLiteStorage.get_logs(project, "tiny-run")
    losses = [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e]
    got = [(row["train/global_step"], row["train/loss"]) for row in logs if "train/loss" in row]
    assert [s for s, _ in got] == [s for s, _ in losses]
    assert [v for _, v in got] == pytest.approx([v for _, v in losses], rel=1e-6)
    assert [row["train/global_step"] for row in logs if "eval/loss" in row] == [3, 6]


def test_a_resumed_run_continues_the_same_trackio_run_without_repeats(tmp_path: Path) -> None:
    import trackio

    project, out = f"statetrain-{tmp_path.name}", tmp_path / "out"
    whole = train_tiny(out, "trackio", project=project)
    train_tiny(out, "trackio", project=project, resume=str(out / "checkpoint-4"))
    assert len(trackio.SQLiteStorage.get_runs(project)) == 1
    logs = trackio.SQLiteStorage.get_logs(project, trackio.SQLiteStorage.get_runs(project)[0])
    steps = [row["train/global_step"] for row in logs if "train/loss" in row]
    assert steps == [e["step"] for e in whole.state.log_history if "loss" in e] == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_codecarbon_writes_emissions_for_the_training(tmp_path: Path) -> None:
    train_tiny(tmp_path / "out", "codecarbon", max_steps=2, eval_strategy="no")
    lines = (tmp_path / "out" / "emissions.csv").read_text().splitlines()
    assert lines[0].startswith("timestamp,project_name,run_id") and len(lines) == 2
