"""benchmarks/gpu_check.py needs CUDA; without it, it must say so and exit 2 rather than pass vacuously."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_runs_nothing_and_says_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = load_script()
    monkeypatch.setattr(script, "cuda_available", lambda: False)
    ran: list[str] = []
    monkeypatch.setattr(script, "run_worker", lambda name, *args, **kwargs: ran.append(name) or {"ok": True})
    assert script.main([]) == script.NO_CUDA_EXIT == 2
    assert ran == []
    assert "no CUDA device" in capsys.readouterr().err


def test_a_failed_check_fails_the_script(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    script = load_script()
    monkeypatch.setattr(script, "cuda_available", lambda: True)
    results = {"bf16": {"ok": True}, "fp16": {"ok": False, "problems": ["the loss did not fall"]}}
    monkeypatch.setattr(script, "run_worker", lambda name, *args, **kwargs: dict(results[name]))
    assert script.main(["--only", "bf16", "fp16"]) == 1
    out = capsys.readouterr().out
    assert "fp16             FAILED" in out and "the loss did not fall" in out


@pytest.mark.slow
def test_the_cpu_smoke_run_passes_its_correctness_checks() -> None:
    """The script cannot run on a GPU here; its plumbing (workers, checkpoints, resume comparisons,
    DeepSpeed in a process no launcher started) runs on CPU so it does not rot unseen."""
    only = ["bf16", "cuda_rng_resume", "deepspeed_resume"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke-cpu", "--only", *only],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    lines = {
        line.split()[0]: line.split()[1] for line in done.stdout.splitlines() if line.split()[:1] in ([n] for n in only)
    }
    assert lines == dict.fromkeys(only, "ok"), done.stdout
