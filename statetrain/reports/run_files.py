"""What a run wrote, read back without touching the run: state files, checkpoints and JSON-lines logs.

Everything here only reads, and tolerates a run that is still writing or that crashed: an
unreadable state file or a half-written log line is skipped, a checkpoint that does not verify is
reported as such. The newest ``trainer_state.json`` wins, whether the run wrote it to its output
folder or only inside a checkpoint; a JSON-lines log (``report_to`` "jsonl") adds the entries
logged after that state was written.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from statetrain.checkpoint.store import CheckpointError, list_checkpoints, verify_checkpoint

STATE_NAME = "trainer_state.json"
ARGS_NAME = "training_args.json"  # what a checkpoint keeps of the TrainingArguments
# eval keys that are timings, not metrics worth a chart
_EVAL_TIMINGS = ("_runtime", "_samples_per_second", "_steps_per_second")


@dataclass(frozen=True)
class CheckpointStatus:
    """One ``checkpoint-<step>`` folder and whether it verifies against its manifest."""

    path: Path
    step: int
    verified: bool
    problem: str | None = None


@dataclass
class RunRecord:
    """A run folder as read: its newest state, merged log history and checkpoints."""

    run_dir: Path
    state: dict[str, Any] = field(default_factory=dict)
    state_file: Path | None = None
    log_history: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[Path] = field(default_factory=list)
    log_files: list[Path] = field(default_factory=list)
    training_args: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.run_dir.name or str(self.run_dir)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """Steps and values of every logged entry holding a finite number under ``key``."""
        steps: list[int] = []
        values: list[float] = []
        for entry in self.log_history:
            value = entry.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                steps.append(int(entry.get("step", 0)))
                values.append(float(value))
        return steps, values

    def eval_metrics(self) -> list[str]:
        """The ``eval_*`` metric names logged, in first-logged order (timings left out)."""
        names: dict[str, None] = {}
        for entry in self.log_history:
            for key in entry:
                if key.startswith("eval_") and not key.endswith(_EVAL_TIMINGS):
                    names.setdefault(key)
        return list(names)

    def last(self, key: str) -> Any:
        """The most recently logged value of ``key``, or None."""
        for entry in reversed(self.log_history):
            if key in entry:
                return entry[key]
        return None

    def verify_checkpoints(self) -> list[CheckpointStatus]:
        """Each checkpoint on disk, checked file by file against its manifest."""
        statuses = []
        for path in self.checkpoints:
            step = int(path.name.rsplit("-", 1)[1])
            try:
                verify_checkpoint(path)
            except CheckpointError as exc:
                statuses.append(CheckpointStatus(path, step, False, str(exc)))
            else:
                statuses.append(CheckpointStatus(path, step, True))
        return statuses


def read_run(run_dir: str | Path) -> RunRecord:
    """Read ``run_dir``; raises ``FileNotFoundError`` when it holds nothing a run writes."""
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    checkpoints = list_checkpoints(root)
    state, state_file = _newest_state([root / STATE_NAME] + [c / STATE_NAME for c in reversed(checkpoints)])
    log_files = sorted(root.glob("*.jsonl"))
    if state_file is None and not log_files:
        raise FileNotFoundError(
            f"{root} holds no {STATE_NAME} (in the folder or a checkpoint) and no JSON-lines log: not a run folder?"
        )
    history = [dict(entry) for entry in state.get("log_history", []) if isinstance(entry, dict)]
    history += _later_log_entries(log_files, max((int(e.get("step", 0)) for e in history), default=-1))
    args, _ = _newest_state([c / ARGS_NAME for c in reversed(checkpoints)])
    return RunRecord(root, state, state_file, history, checkpoints, log_files, args)


def _newest_state(candidates: list[Path]) -> tuple[dict[str, Any], Path | None]:
    """The readable JSON object with the highest ``global_step``; the first listed wins a tie."""
    best: tuple[dict[str, Any], Path | None] = ({}, None)
    for path in candidates:
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # absent, or being rewritten right now
            continue
        if not isinstance(state, dict):
            continue
        if best[1] is None or int(state.get("global_step", 0)) > int(best[0].get("global_step", 0)):
            best = (state, path)
    return best


def _later_log_entries(files: list[Path], after_step: int) -> list[dict[str, Any]]:
    """Entries of JSON-lines logs logged after ``after_step``, with HF's ``train/``/``eval/`` names undone."""
    entries: list[dict[str, Any]] = []
    for path in files:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for line in lines:
            entry = _log_line(line)
            if entry is not None and entry["step"] > after_step:
                entries.append(entry)
    entries.sort(key=lambda e: e["step"])
    return entries


def _log_line(line: str) -> dict[str, Any] | None:
    try:
        raw = json.loads(line)
    except ValueError:  # the line being written, or not a log line
        return None
    if not isinstance(raw, dict):
        return None
    entry: dict[str, Any] = {}
    for key, value in raw.items():
        if key.startswith("train/"):
            key = key[len("train/") :]
        elif key.startswith("eval/"):
            key = "eval_" + key[len("eval/") :]
        entry[key] = value
    step = entry.get("step", entry.get("global_step"))
    if not isinstance(step, int) or isinstance(step, bool):
        return None
    entry["step"] = step
    return entry
