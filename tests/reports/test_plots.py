"""`statetrain plot` draws what the runs logged: the PNGs exist, decode, and hold the logged series."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from matplotlib.image import imread

from statetrain.cli import main as cli_main
from statetrain.reports import plot_runs, read_run


def logged(run_dir: Path, key: str) -> tuple[list[float], list[float]]:
    history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    entries = [e for e in history if key in e]
    return [float(e["step"]) for e in entries], [float(e[key]) for e in entries]


def test_plot_writes_decodable_pngs_of_every_series(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    fast, slow = two_runs
    assert cli_main(["plot", str(fast), str(slow), "--out", str(tmp_path)]) == 0
    for name in ("loss", "learning_rate", "grad_norm", "eval_loss"):
        image = imread(tmp_path / f"{name}.png")
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert image.std() > 0  # not a blank canvas


def test_plotted_series_equal_the_logged_values(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    fast, slow = two_runs
    charts = {chart.key: chart for chart in plot_runs([read_run(fast), read_run(slow)], tmp_path)}
    assert set(charts) == {"loss", "learning_rate", "grad_norm", "eval_loss"}
    for key, chart in charts.items():
        assert chart.path.is_file()
        assert set(chart.lines) == {"fast", "slow"}, "both runs overlaid, labelled by folder"
        for run_dir in (fast, slow):
            steps, values = logged(run_dir, key)
            assert steps, key
            assert chart.lines[run_dir.name] == (steps, values)


def test_plot_reads_a_crashed_run_from_its_newest_checkpoint(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    crashed = tmp_path / "crashed"
    shutil.copytree(two_runs[0], crashed)
    (crashed / "trainer_state.json").unlink()  # a run killed before it wrote its final state
    shutil.rmtree(crashed / "checkpoint-12")
    run = read_run(crashed)
    assert run.state_file == crashed / "checkpoint-8" / "trainer_state.json"
    chart = next(c for c in plot_runs([run], tmp_path / "plots") if c.key == "loss")
    history = json.loads((crashed / "checkpoint-8" / "trainer_state.json").read_text())["log_history"]
    assert chart.lines["crashed"] == (
        [float(e["step"]) for e in history if "loss" in e],
        [e["loss"] for e in history if "loss" in e],
    )
    assert max(chart.lines["crashed"][0]) == 8


def test_a_jsonl_log_extends_the_series_past_the_last_state(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    running = tmp_path / "running"
    shutil.copytree(two_runs[0], running)
    lines = [
        {"train/loss": 0.5, "train/learning_rate": 1e-3, "step": 14},
        {"eval/loss": 0.25, "step": 16},
        {"train/loss": 0.125, "step": 16},
    ]
    text = "\n".join(json.dumps(line) for line in lines) + '\n{"train/loss": 0.1, "st'  # a line being written
    (running / "log.jsonl").write_text(text)
    run = read_run(running)
    steps, values = run.series("loss")
    assert steps[-2:] == [14, 16] and values[-2:] == [0.5, 0.125]
    assert run.series("eval_loss")[0][-1] == 16


def test_plot_of_a_folder_that_is_no_run_says_so(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"no trainer_state\.json"):
        cli_main(["plot", str(tmp_path)])
