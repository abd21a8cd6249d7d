"""The main job: `statetrain demo` really learns the digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from statetrain.cli import main as cli_main


@pytest.mark.slow
def test_demo_reaches_high_held_out_accuracy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["demo", "--output-dir", str(tmp_path / "out"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "out" / "demo_results.json").read_text())
    assert results["held_out_accuracy"] >= 0.93
    assert results["last_logged_loss"] < results["first_logged_loss"] / 4
    assert "held-out accuracy" in printed
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    assert state["global_step"] == results["global_step"] > 0
