"""`statetrain summary` reports what the run wrote, including which checkpoints verify."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from statetrain.cli import main as cli_main


def summary_json(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    assert cli_main(["summary", str(run_dir), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_summary_of_a_finished_run(two_runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = two_runs[0]
    state = json.loads((run_dir / "trainer_state.json").read_text())
    facts = summary_json(run_dir, capsys)
    assert facts["status"] == "finished"
    assert facts["global_step"] == 12 == facts["max_steps"]
    assert facts["best_metric"] == state["best_metric"] and facts["best_global_step"] == state["best_global_step"]
    assert facts["best_model_checkpoint"] == state["best_model_checkpoint"]
    assert facts["metric_for_best_model"] == "eval_loss"
    final = state["log_history"][-1]
    assert facts["train_runtime_seconds"] == final["train_runtime"]
    assert facts["train_samples_per_second"] == final["train_samples_per_second"]
    assert facts["last_logged_loss"] == [e["loss"] for e in state["log_history"] if "loss" in e][-1]
    assert facts["last_eval_loss"] == [e["eval_loss"] for e in state["log_history"] if "eval_loss" in e][-1]
    assert [(c["step"], c["verified"]) for c in facts["checkpoints"]] == [(4, True), (8, True), (12, True)]

    assert cli_main(["summary", str(run_dir)]) == 0
    table = capsys.readouterr().out
    assert "steps              12 of 12" in table
    assert "best metric        eval_loss " in table
    assert "checkpoint-12 (step 12): verifies" in table


def test_summary_flags_a_corrupt_checkpoint_and_an_unfinished_run(
    two_runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "broken"
    shutil.copytree(two_runs[1], run_dir)
    (run_dir / "trainer_state.json").unlink()
    weights = next((run_dir / "checkpoint-8").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    facts = summary_json(run_dir, capsys)
    assert facts["status"].startswith("not finished")
    assert facts["global_step"] == 12  # from the newest checkpoint's state
    verdicts = {c["step"]: c for c in facts["checkpoints"]}
    assert verdicts[4]["verified"] and verdicts[12]["verified"]
    assert not verdicts[8]["verified"] and "checksum mismatch" in verdicts[8]["problem"]
    assert cli_main(["summary", str(run_dir)]) == 0
    assert "(step 8): DOES NOT VERIFY" in capsys.readouterr().out
