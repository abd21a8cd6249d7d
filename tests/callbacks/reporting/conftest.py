"""The trackers, offline and inside the test's folder: nothing leaves the machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.callbacks.reporting.runs import set_offline_trackers


@pytest.fixture
def offline_trackers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Environment for every tracker to write under ``tmp_path/trackers``; returns that folder."""
    root = tmp_path / "trackers"
    root.mkdir()
    set_offline_trackers(root, monkeypatch)
    return root
