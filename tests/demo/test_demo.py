"""The main job: `statetrain demo` learns the digits, survives a real SIGTERM and resumes to the same bits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from matplotlib.image import imread

from statetrain.cli import main as cli_main
from statetrain.demo import load_digits_splits
from statetrain.demo.run import _trainer, demo_arguments


@pytest.mark.slow
def test_demo_preempts_resumes_and_matches_an_uninterrupted_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert cli_main(["demo", "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "demo_results.json").read_text())
    assert results["held_out_accuracy"] >= 0.93
    assert results["last_logged_loss"] < results["first_logged_loss"] / 4
    assert results["bit_identical_to_uninterrupted"] is True
    assert 0 < results["preempted_at_step"] < results["global_step"]
    assert Path(results["resumed_from"]) == out / f"checkpoint-{results['preempted_at_step']}"
    assert "held-out accuracy" in printed
    assert "final weights equal an uninterrupted run's bit for bit" in printed
    assert f"SIGTERM at step {results['preempted_at_step']}" in printed
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == results["global_step"] > 0
    for name in ("plots/loss.png", "state-diagram.mmd", "summary.txt"):
        assert str(out / name) in printed, f"the demo does not point at {name}"
    assert imread(out / "plots" / "loss.png").ndim == 3
    assert (out / "state-diagram.mmd").read_text().startswith("stateDiagram-v2")
    assert "verifies" in (out / "summary.txt").read_text()


def test_demo_model_starts_from_the_same_weights_every_time(tmp_path: Path) -> None:
    rows, _ = load_digits_splits()
    args = demo_arguments(tmp_path, epochs=1, disable_tqdm=True, seed=42)
    torch.manual_seed(1234)  # whatever the global generator held before
    first = _trainer(args, rows, []).model.state_dict()
    torch.rand(10)
    second = _trainer(args, rows, []).model.state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)
