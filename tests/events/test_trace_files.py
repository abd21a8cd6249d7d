"""Trace files: a run recorded by TraceWriter passes the checker; tampered traces fail by rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from statetrain import Trainer, TrainingArguments, default_machine
from statetrain.cli import main as cli_main
from statetrain.testing.trace import TraceError, TraceWriter, check_machine_trace, read_trace
from tests.helpers import TinyRegressor, regression_rows


def recorded(tmp_path: Path, **overrides: Any) -> Path:
    options: dict[str, Any] = dict(
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        num_train_epochs=2,
        logging_steps=1,
        save_strategy="steps",
        save_steps=3,
        use_cpu=True,
        disable_tqdm=True,
        report_to="none",
        eval_strategy="steps",
        eval_steps=2,
    )
    options.update(overrides)
    trainer = Trainer(
        model=TinyRegressor(),
        args=TrainingArguments(str(tmp_path / "out"), **options),
        train_dataset=regression_rows(19),
        eval_dataset=regression_rows(5, seed=3),
    )
    writer = TraceWriter(tmp_path / "trace.jsonl").attach(trainer)
    trainer.train()
    writer.close()
    return tmp_path / "trace.jsonl"


def test_recorded_run_follows_the_default_machine(tmp_path: Path) -> None:
    path = recorded(tmp_path)
    trace = read_trace(path)
    check_machine_trace(trace, default_machine())
    states = [e.state for e in trace if e.event == "on_state_enter"]
    assert states[0] == "init" and states[-1] == "done" and {"evaluate", "save"} <= set(states)
    assert cli_main(["check-trace", str(path)]) == 0


def _rewrite(path: Path, edit: Any) -> Path:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    edit(lines)
    out = path.with_name("tampered.jsonl")
    out.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return out


def test_a_jump_the_machine_does_not_declare_is_caught(tmp_path: Path) -> None:
    path = recorded(tmp_path)

    def skip_optimize(lines: list[dict[str, Any]]) -> None:
        for entry in lines:
            if entry["state"] == "optimize" and entry["event"] in ("on_state_enter", "on_state_exit"):
                entry["state"] = "log"

    bad = _rewrite(path, skip_optimize)
    with pytest.raises(TraceError, match=r"not a declared transition|left"):
        check_machine_trace(read_trace(bad), default_machine())
    assert cli_main(["check-trace", str(bad)]) == 1


def test_an_event_fired_in_the_wrong_state_is_caught(tmp_path: Path) -> None:
    path = recorded(tmp_path)

    def move_save(lines: list[dict[str, Any]]) -> None:
        first = next(i for i, e in enumerate(lines) if e["event"] == "on_step_begin")
        lines[first]["event"] = "on_save"

    with pytest.raises(TraceError, match="on_save fired in state 'step'"):
        check_machine_trace(read_trace(_rewrite(path, move_save)), default_machine())


def test_a_truncated_trace_is_caught(tmp_path: Path) -> None:
    path = recorded(tmp_path)
    bad = _rewrite(path, lambda lines: lines.__delitem__(slice(len(lines) // 2, None)))
    with pytest.raises(TraceError, match="not in the final state"):
        check_machine_trace(read_trace(bad), default_machine())


def test_malformed_trace_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"event": "on_log", "global_step": 0, "epoch": 0}\nnot json\n')
    with pytest.raises(TraceError, match=r"bad\.jsonl:2"):
        read_trace(path)
