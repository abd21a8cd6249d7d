"""``report_to="jsonl"`` and ``"csv"``: the log history as files, with no package to install.

Each file holds exactly the run's ``state.log_history``, one entry per log event, in order:
``output_dir/log_history.jsonl`` (one JSON object a line, appended and flushed, so it can be read
while the run goes) and ``output_dir/log_history.csv`` (one row per entry; the header is the union
of the keys seen, and the file is rewritten when a new key appears, which happens a few times a run).

A resumed run continues the same file: at the start of training the file is cut back to the
entries the checkpoint's log history holds, so steps the interrupted run logged after its last
checkpoint are written once, by the resumed run, not twice.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from statetrain.callbacks.base import TrainerCallback

JSONL_NAME = "log_history.jsonl"
CSV_NAME = "log_history.csv"


def _entry(logs: dict[str, Any], step: int) -> dict[str, Any]:
    """What ``Trainer.log`` appends to ``state.log_history`` for these logs."""
    return {**logs, "step": step}


class JsonLinesCallback(TrainerCallback):
    """Appends every ``on_log`` as one JSON line (``state.log_history``'s entry) to ``log_history.jsonl``."""

    def __init__(self) -> None:
        self.path: Path | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        self.path = Path(args.output_dir) / JSONL_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = read_jsonl(self.path)[: len(state.log_history)] if self.path.exists() else []
        # rewritten whole, then replaced: an interrupted cut never leaves half a file
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(entry) + "\n" for entry in kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or logs is None:
            return
        if self.path is None:  # a log outside train() (evaluate alone) still lands in the file
            self.path = Path(args.output_dir) / JSONL_NAME
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(_entry(logs, state.global_step)) + "\n")
            handle.flush()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The entries of a ``log_history.jsonl`` (a last line cut short by a crash is dropped)."""
    entries = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return entries


class CsvCallback(TrainerCallback):
    """Writes ``state.log_history`` as ``log_history.csv``: one row per log event, one column per key."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.columns: list[str] = []
        self.rows: list[dict[str, Any]] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        self.path = Path(args.output_dir) / CSV_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows = read_csv(self.path)[: len(state.log_history)] if self.path.exists() else []
        self.columns = list(dict.fromkeys(key for row in self.rows for key in row))
        self._rewrite()

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or logs is None:
            return
        if self.path is None:
            self.path = Path(args.output_dir) / CSV_NAME
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._rewrite()
        row = _entry(logs, state.global_step)
        self.rows.append(row)
        new = [key for key in row if key not in self.columns]
        if new:
            self.columns.extend(new)
            self._rewrite()
            return
        with self.path.open("a", encoding="utf-8", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.columns).writerow(row)
            handle.flush()

    def _rewrite(self) -> None:
        assert self.path is not None
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            if self.columns:
                writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``log_history.csv``, numbers parsed back (empty cells left out)."""
    with Path(path).open(encoding="utf-8", newline="") as handle:
        return [{k: _number(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text
