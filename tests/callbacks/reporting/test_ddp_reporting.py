"""Two processes under torchrun: one set of report files, written by the main process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from statetrain.callbacks.reporting import read_jsonl
from tests.distributed.launching import TORCHRUN, run_launched


@pytest.mark.slow
def test_only_the_main_process_reports_under_ddp(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = run_launched([*TORCHRUN, "tests/callbacks/reporting/run_ddp_reporting.py", str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    history = json.loads((out / "history-rank0.json").read_text())
    entries = read_jsonl(out / "log_history.jsonl")
    assert [e["step"] for e in entries] == [e["step"] for e in history]  # once each, not once per process
    assert len((out / "log_history.csv").read_text().splitlines()) == len(history) + 1
    event_files = list((out / "runs").rglob("events.out.tfevents.*"))
    assert len(event_files) == 1, event_files
