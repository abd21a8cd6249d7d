"""The trackers, offline and inside the test's folder: nothing leaves the machine."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def offline_trackers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Environment for every tracker to write under ``tmp_path/trackers``; returns that folder."""
    root = tmp_path / "trackers"
    root.mkdir()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(root))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{root / 'mlruns'}")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("TRACKIO_DIR", str(root / "trackio"))
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    return root
