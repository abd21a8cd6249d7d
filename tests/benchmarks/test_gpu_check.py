"""benchmarks/gpu_check.py needs CUDA; without it, it must say so and exit 2 rather than pass vacuously."""

from __future__ import annotations

import importlib.util
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
