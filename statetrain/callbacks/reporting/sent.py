"""How many log events a tracker's run already holds, kept beside the run's outputs.

Trackers that cannot be asked what they hold (W&B offline, Trackio) would get the steps an
interrupted run logged after its last checkpoint twice when the run resumes. Each log event is
entry ``i`` of ``state.log_history`` (``Trainer.log`` appends before firing ``on_log``), and a
resumed run replays the same entries (statetrain resumes bit-exactly), so remembering how many
entries the tracker's run received is enough to send each one once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class SentLog:
    """``output_dir/<tracker>-sent.json``: ``{"run": <run id>, "sent": <log entries sent>}``."""

    def __init__(self, tracker: str) -> None:
        self.tracker = tracker
        self.path: Path | None = None
        self.run: str | None = None
        self.sent = 0

    def open(self, output_dir: str, run: str | None, resumed: bool) -> None:
        """Start counting for ``run``; a resumed run picks up the count its earlier process left."""
        self.path = Path(output_dir) / f"{self.tracker}-sent.json"
        self.run, self.sent = run, 0
        if resumed and self.path.exists():
            stored: Any = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(stored, dict) and stored.get("run") == run:
                self.sent = int(stored.get("sent", 0))

    def should_send(self, state: Any) -> bool:
        """True for a log entry the tracker's run does not hold yet (then counted as sent)."""
        index = len(state.log_history) - 1
        if self.path is None or index < self.sent:
            return self.path is None
        self.sent = index + 1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"run": self.run, "sent": self.sent}), encoding="utf-8")
        os.replace(tmp, self.path)
        return True
