"""benchmarks/overhead.py: ratios within a repetition, the issue's targets judged, and a real smoke run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "overhead.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("overhead", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def result(us: float, rss: float = 300.0, digest: str = "d", **extra: Any) -> dict[str, Any]:
    return {"us_per_step": us, "cpu_us_per_step": us, "peak_rss_mb": rss, "digest": digest, **extra}


def test_ratios_are_taken_within_each_repetition() -> None:
    script = load_script()
    # the machine slows down by 2x in the second repetition: per-repetition ratios stay 1.1
    reps = [
        {"hand": result(100), "statetrain": result(110)},
        {"hand": result(200), "statetrain": result(220)},
    ]
    (hand, st) = script.rows_of(["hand", "statetrain"], reps)
    assert st["ratio"] == {"median": pytest.approx(1.1), "min": pytest.approx(1.1), "max": pytest.approx(1.1)}
    assert st["bit_identical_to_hand"] and hand["ratio"]["median"] == 1.0


def test_each_target_is_judged_met_or_not() -> None:
    script = load_script()
    reps = [
        {
            "hand": result(100),
            "statetrain": result(104, rss=320, import_seconds=1.0, construct_seconds=0.05),
            "statetrain+log": result(110),
            "ignite": result(103),
            "transformers": result(300, import_seconds=3.0, construct_seconds=0.4),
        }
    ]
    rows = script.rows_of(list(reps[0]), reps)
    verdicts = dict((text.split(" (")[0], ok) for text, ok in script.verdicts("tiny", rows))
    assert verdicts == {
        "statetrain <= 1.05x hand-written": True,
        "statetrain below Ignite": False,
        "statetrain, callbacks on, logging every 50 <= 1.08x": False,
        "statetrain peak RSS <= 1.05x hand-written": False,
        "first Trainer() faster than HF's": True,
    }


def test_only_installed_peers_are_candidates() -> None:
    script = load_script()
    names = script.installed(list(script.CANDIDATES))
    assert names[:3] == ["hand", "statetrain", "statetrain+log"]
    for name in names[3:]:
        assert importlib.util.find_spec(script.CANDIDATES[name][1]) is not None


@pytest.mark.slow
def test_a_short_run_prints_the_table_and_the_verdicts() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--reps",
            "1",
            "--steps",
            "5",
            "--workloads",
            "tiny",
            "--candidates",
            "statetrain",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    row = next(line for line in out.splitlines() if line.startswith("statetrain "))
    assert row.endswith("yes")  # the same parameters as the hand-written loop
    assert "first Trainer()" in out and "targets:" in out
