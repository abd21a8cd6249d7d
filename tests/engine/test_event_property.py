"""Property: for any small configuration the real Trainer emits a legal trace with the right values.

The expected trace is computed here independently of statetrain's code, from the reference's
window arithmetic (trainer-semantics §1.2) and DefaultFlowCallback's logging rules (§2):
``ceil(rows / batch)`` micro-batches per epoch, ``ceil(n / GA)`` windows per epoch, the last one
holding ``n % GA`` micro-batches when that is not zero, ``max_steps`` truncating the run after
``ceil(max_steps / steps_per_epoch)`` epochs, and a log whenever the flow asks for one and the
step moved since the last log.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from statetrain import Event, Trainer, TrainingArguments
from statetrain.testing.grammar import check_trace, hf_events_only
from statetrain.testing.nesting import check_state_nesting
from statetrain.testing.recorder import TraceRecorder
from tests.helpers import TinyRegressor, regression_rows

Trace = list[tuple[str, int, float]]
EVAL_ROWS, EVAL_BATCH = 5, 2  # three prediction steps per evaluation


@dataclass(frozen=True)
class Config:
    rows: int
    batch_size: int
    accumulation: int
    epochs: int | None  # exactly one of epochs / max_steps is set
    max_steps: int | None
    logging_strategy: str
    logging_steps: int
    logging_first_step: bool
    eval_strategy: str = "no"
    eval_steps: int = 1
    save_strategy: str = "no"
    save_steps: int = 1

    def arguments(self, output_dir: Path) -> TrainingArguments:
        length: dict[str, Any] = (
            {"max_steps": self.max_steps} if self.max_steps is not None else {"num_train_epochs": self.epochs}
        )
        return TrainingArguments(
            output_dir=str(output_dir),
            per_device_train_batch_size=self.batch_size,
            gradient_accumulation_steps=self.accumulation,
            logging_strategy=self.logging_strategy,
            logging_steps=self.logging_steps,
            logging_first_step=self.logging_first_step,
            learning_rate=1e-2,
            optim="adamw_torch",
            eval_strategy=self.eval_strategy,
            eval_steps=self.eval_steps,
            per_device_eval_batch_size=EVAL_BATCH,
            save_strategy=self.save_strategy,
            save_steps=self.save_steps,
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
            seed=11,
            **length,
        )


@dataclass
class Expected:
    trace: Trace
    global_step: int
    logged_steps: list[int]
    micro_batches: int


def expected_run(c: Config) -> Expected:
    """The HF trace of a run, from the reference alone (no statetrain code involved)."""
    n = math.ceil(c.rows / c.batch_size)  # micro-batches per epoch (drop_last is off)
    steps_per_epoch = math.ceil(n / c.accumulation)
    if c.max_steps is not None:
        max_steps, epochs = c.max_steps, math.ceil(c.max_steps / steps_per_epoch)
    else:
        assert c.epochs is not None
        max_steps, epochs = c.epochs * steps_per_epoch, c.epochs
    window_sizes = [c.accumulation] * (steps_per_epoch - 1) + [n % c.accumulation or c.accumulation]
    assert sum(window_sizes) == n

    trace: Trace = [("on_init_end", 0, 0.0), ("on_train_begin", 0, 0.0)]
    step, epoch, last_logged, logged = 0, 0.0, 0, []
    stop = False

    def log_if_moved() -> None:
        nonlocal last_logged
        if step > last_logged:
            trace.append(("on_log", step, epoch))
            logged.append(step)
            last_logged = step

    def evaluate() -> None:
        trace.extend([("on_prediction_step", step, epoch)] * math.ceil(EVAL_ROWS / EVAL_BATCH))
        trace.extend([("on_log", step, epoch), ("on_evaluate", step, epoch)])

    def save() -> None:
        trace.append(("on_save", step, epoch))

    for e in range(epochs):
        trace.append(("on_epoch_begin", step, epoch))
        consumed = 0
        for size in window_sizes:
            trace.append(("on_step_begin", step, epoch))
            for _ in range(size - 1):
                consumed += 1
                trace.append(("on_substep_end", step, epoch))
            consumed += 1
            trace += [("on_pre_optimizer_step", step, epoch), ("on_optimizer_step", step, epoch)]
            step, epoch = step + 1, e + consumed / n
            trace.append(("on_step_end", step, epoch))
            should_log = (step == 1 and c.logging_first_step) or (
                c.logging_strategy == "steps" and step % c.logging_steps == 0
            )
            last = step >= max_steps
            if should_log:
                log_if_moved()
            # HF §2: under "steps" the last step is always evaluated and saved
            if c.eval_strategy == "steps" and (step % c.eval_steps == 0 or last):
                evaluate()
            if c.save_strategy == "steps" and (step % c.save_steps == 0 or last):
                save()
            if last:
                stop = True
                break
        trace.append(("on_epoch_end", step, epoch))
        if c.logging_strategy == "epoch":
            log_if_moved()
        if c.eval_strategy == "epoch":
            evaluate()
        if c.save_strategy == "epoch":
            save()
        if stop:
            break
    trace += [("on_log", step, epoch), ("on_train_end", step, epoch)]
    return Expected(trace, step, logged, n)


def train(c: Config, output_dir: Path, setup: Any = None) -> tuple[Trainer, TraceRecorder]:
    recorder = TraceRecorder()
    torch.manual_seed(0)
    trainer = Trainer(
        model=TinyRegressor(),
        args=c.arguments(output_dir),
        train_dataset=regression_rows(c.rows),
        eval_dataset=regression_rows(EVAL_ROWS, seed=99) if c.eval_strategy != "no" else None,
        callbacks=[recorder],
    )
    if setup is not None:
        setup(trainer, recorder)
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.train()
    return trainer, recorder


def assert_same_trace(actual: Trace, expected: Trace) -> None:
    assert [e[:2] for e in actual] == [e[:2] for e in expected]
    for position, (got, want) in enumerate(zip(actual, expected, strict=True)):
        assert got[2] == pytest.approx(want[2], abs=1e-12), f"epoch at trace[{position}] {got} != {want}"


@st.composite
def configs(draw: st.DrawFn) -> Config:
    by_epochs = draw(st.booleans())
    return Config(
        rows=draw(st.integers(1, 40)),
        batch_size=draw(st.integers(1, 6)),
        accumulation=draw(st.integers(1, 4)),
        epochs=draw(st.integers(1, 3)) if by_epochs else None,
        max_steps=None if by_epochs else draw(st.integers(1, 12)),
        logging_strategy=draw(st.sampled_from(["steps", "epoch", "no"])),
        logging_steps=draw(st.integers(1, 5)),
        logging_first_step=draw(st.booleans()),
        eval_strategy=draw(st.sampled_from(["no", "no", "steps", "epoch"])),
        eval_steps=draw(st.integers(1, 4)),
        save_strategy=draw(st.sampled_from(["no", "no", "steps", "epoch"])),
        save_steps=draw(st.integers(1, 4)),
    )


@pytest.fixture(scope="module")
def output_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("event_property")


def test_reference_matches_the_documented_example() -> None:
    # trainer-semantics §1.2: one epoch of 5 micro-batches, GA=2, max_steps=3, log every step.
    expected = expected_run(Config(5, 1, 2, None, 3, "steps", 1, False))
    names = [e[0] for e in expected.trace]
    assert names.count("on_step_begin") == 3 and names.count("on_substep_end") == 2
    assert [e[2] for e in expected.trace if e[0] == "on_step_end"] == [0.4, 0.8, 1.0]
    assert expected.logged_steps == [1, 2, 3] and expected.global_step == 3


@settings(max_examples=40, deadline=None)
@given(c=configs())
def test_trainer_events_follow_the_grammar_and_the_reference(c: Config, output_dir: Path) -> None:
    trainer, recorder = train(c, output_dir)
    expected = expected_run(c)
    # (a) the hand-written grammar accepts the run, also with the exact epoch and window sizes
    check_trace(recorder.trace)
    check_trace(recorder.trace, steps_in_epoch=expected.micro_batches, gradient_accumulation_steps=c.accumulation)
    # (b) every event, step and epoch value is the reference's
    assert_same_trace(recorder.trace, expected.trace)
    # (c) the state and the log history agree
    assert trainer.state.global_step == expected.global_step
    losses = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["step"] for entry in losses] == expected.logged_steps
    assert "train_loss" in trainer.state.log_history[-1]


def test_states_nest_around_their_events_with_accumulation_and_a_short_window(output_dir: Path) -> None:
    # 19 rows in batches of 4: 5 micro-batches, GA=2 gives windows 2, 2, 1; two epochs.
    c = Config(19, 4, 2, 2, None, "steps", 2, True)
    engine_events = (
        Event.ON_BEFORE_FORWARD,
        Event.ON_AFTER_FORWARD,
        Event.ON_AFTER_LOSS,
        Event.ON_BEFORE_BACKWARD,
        Event.ON_AFTER_BACKWARD,
    )

    def setup(trainer: Trainer, recorder: TraceRecorder) -> None:
        def state_entry(d: Any) -> None:
            kind = d.event.value
            recorder.trace.append((f"{kind}:{d.payload['state_name']}", d.state.global_step, float(d.state.epoch)))

        def engine_entry(d: Any) -> None:
            recorder.trace.append((d.event.value, d.state.global_step, float(d.state.epoch)))

        trainer.on(Event.ON_STATE_ENTER, state_entry)
        trainer.on(Event.ON_STATE_EXIT, state_entry)
        for event in engine_events:
            trainer.on(event, engine_entry)

    _, recorder = train(c, output_dir, setup)
    check_state_nesting(recorder.trace)
    names = [e[0] for e in recorder.trace]
    entered = [n.split(":", 1)[1] for n in names if n.startswith("on_state_enter:")]
    assert set(entered) == {"init", "epoch", "step", "accumulate", "optimize", "log", "epoch_end", "done"}
    assert names.count("on_before_forward") == 10 and names.count("on_state_enter:accumulate") == 10
    hf_trace = hf_events_only(recorder.trace)
    check_trace(hf_trace, steps_in_epoch=5, gradient_accumulation_steps=2)
    assert_same_trace([tuple(e) for e in hf_trace], expected_run(c).trace)


def test_states_nest_with_evaluation_and_save(output_dir: Path) -> None:
    c = Config(19, 4, 2, 2, None, "steps", 2, True, eval_strategy="steps", eval_steps=2, save_strategy="epoch")

    def setup(trainer: Trainer, recorder: TraceRecorder) -> None:
        def state_entry(d: Any) -> None:
            recorder.trace.append(
                (f"{d.event.value}:{d.payload['state_name']}", d.state.global_step, float(d.state.epoch))
            )

        trainer.on(Event.ON_STATE_ENTER, state_entry)
        trainer.on(Event.ON_STATE_EXIT, state_entry)

    _, recorder = train(c, output_dir, setup)
    check_state_nesting(recorder.trace)
    entered = {n.split(":", 1)[1] for n, _, _ in recorder.trace if n.startswith("on_state_enter:")}
    assert {"evaluate", "save"} <= entered
    hf_trace = hf_events_only(recorder.trace)
    check_trace(hf_trace)
    assert_same_trace([tuple(e) for e in hf_trace], expected_run(c).trace)
