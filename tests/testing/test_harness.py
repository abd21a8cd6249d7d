"""The property-testing harness: it passes on the real engine and finds planted bugs, shrunk small.

Each planted bug is a few lines a user could plausibly write. The harness must fail on it with the
invariant that names the problem, and hypothesis must shrink the run to a handful of rules on a
tiny configuration. Settings are derandomized so the examples, and so the outcome, are the same on
every run.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

from statetrain import EarlyStoppingCallback, ExportableState, TrainerCallback, default_machine
from statetrain.args.training_args import TrainingArguments
from statetrain.engine.machine import MachineSpec
from statetrain.states import AccumulateState, StepState
from statetrain.testing import (
    HarnessFailure,
    LoopHarness,
    TrainingConfig,
    harness_settings,
    metric_sequences,
    training_configs,
)


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    """EarlyStoppingCallback warns about load_best_model_at_end on every train() call."""
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def run(harness: type[LoopHarness], max_examples: int, steps: int = 5) -> None:
    run_state_machine_as_test(
        harness,
        settings=harness_settings(
            max_examples=max_examples,
            stateful_step_count=steps,
            database=None,
            derandomize=True,
            report_multiple_bugs=False,
        ),
    )


def falsifying(harness: type[LoopHarness], max_examples: int, steps: int = 5) -> tuple[str, list[str], str]:
    """Run ``harness`` expecting a failure: (message, the rules of the shrunk example, its notes)."""
    with pytest.raises(HarnessFailure) as info:
        run(harness, max_examples, steps)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    rules = [
        line
        for line in notes.splitlines()
        if line.startswith("state.") and not line.startswith(("state.counters", "state.setup", "state.teardown"))
    ]
    return str(info.value), rules, notes


def drawn(notes: str, name: str) -> Any:
    match = re.search(rf"\b{name}=([^,)\s]+)", notes)
    assert match, f"{name} not in the falsifying example:\n{notes}"
    return eval(match.group(1))  # an int, None, a bool or a quoted string, as printed by repr


def small_configs(**kwargs: Any) -> st.SearchStrategy[TrainingConfig]:
    return training_configs(max_total_steps=5, max_train_size=6, **kwargs)


# --- the real engine passes ----------------------------------------------------------------------


def test_the_real_engine_passes() -> None:
    run(LoopHarness, max_examples=40, steps=8)


class BoostAfter(TrainerCallback, ExportableState):
    """Doubles the loss once it has counted ``after`` optimizer steps, and exports its count."""

    def __init__(self, after: int = 2) -> None:
        self.after = after
        self.steps_seen = 0

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.steps_seen += 1

    def on_after_loss(self, args: Any, state: Any, control: Any, loss: Any = None, **kwargs: Any) -> Any:
        return {"loss": loss * 2} if self.steps_seen >= self.after else None

    def state(self) -> dict[str, Any]:
        return {"args": {"after": self.after}, "attributes": {"steps_seen": self.steps_seen}}


class BoostHarness(LoopHarness):
    def config_strategy(self) -> st.SearchStrategy[TrainingConfig]:
        return small_configs(strategies=False)

    def make_callbacks(self) -> list[Any]:
        return [BoostAfter()]


def test_a_callback_that_exports_its_counter_passes() -> None:
    BoostHarness.run(max_examples=15, stateful_step_count=5, database=None, derandomize=True)


class ScoredHarness(LoopHarness):
    """Evaluates at every step (or epoch) on a drawn metric sequence, and stops early on it."""

    stopper: type[EarlyStoppingCallback] = EarlyStoppingCallback

    def config_strategy(self) -> st.SearchStrategy[TrainingConfig]:
        return st.tuples(small_configs(with_eval=True, strategies=False), st.sampled_from(["steps", "epoch"])).map(
            lambda pair: pair[0].replace(eval_strategy=pair[1], eval_steps=1)
        )

    def metric_strategy(self) -> st.SearchStrategy[list[float]]:
        return metric_sequences()

    def make_callbacks(self) -> list[Any]:
        return [self.stopper(early_stopping_patience=2)]

    def training_arguments(self, output_dir: str) -> TrainingArguments:
        assert self.config is not None
        return self.config.training_arguments(output_dir, metric_for_best_model="score")


def test_early_stopping_passes() -> None:
    run(ScoredHarness, max_examples=20)


# --- (a) a callback whose counter does not come back on resume -----------------------------------


class ForgetfulBoost(BoostAfter):
    """Exports its count under another name than the attribute, so a resume restores nothing."""

    def state(self) -> dict[str, Any]:
        return {"args": {"after": self.after}, "attributes": {"seen": self.steps_seen}}


class ForgetfulHarness(BoostHarness):
    def make_callbacks(self) -> list[Any]:
        return [ForgetfulBoost()]


def test_finds_a_callback_counter_lost_on_resume() -> None:
    message, rules, notes = falsifying(ForgetfulHarness, max_examples=25)
    assert "differs from the uninterrupted run's" in message
    # every segment after the first resumes from a checkpoint; as in HF, a resume re-creates an
    # exportable callback from what it stored, so a cut (advance) exposes it without a kill
    assert any(rule.startswith(("state.kill_and_resume(", "state.advance(")) for rule in rules), notes
    assert len(rules) <= 3, notes
    assert drawn(notes, "train_size") <= 4, notes


# --- (b) a state that skips the last, short accumulation window ----------------------------------


class DropShortWindow(StepState):
    """Leaves out an epoch's last window when it is short, as a drop_last for windows would."""

    def run(self, run: Any) -> None:
        plan = run.plan
        short = plan.steps_in_epoch % plan.gradient_accumulation_steps
        if short and run.update_step == plan.num_update_steps_per_epoch - 1:
            run.window, run.window_pos = [], 0
            return
        super().run(run)


class DropShortWindowHarness(LoopHarness):
    def config_strategy(self) -> st.SearchStrategy[TrainingConfig]:
        return small_configs(strategies=False, with_eval=False)

    def make_machine(self) -> MachineSpec:
        return default_machine().replace_state(DropShortWindow())


def test_finds_a_state_that_skips_the_short_last_window() -> None:
    message, rules, notes = falsifying(DropShortWindowHarness, max_examples=25)
    assert "the event trace breaks the loop's rules" in message
    assert "ended before its last micro-batch" in message
    assert len(rules) <= 2, notes
    assert drawn(notes, "train_size") <= 3, notes
    assert drawn(notes, "iterable") is False, notes


class SkipShortWindowWork(AccumulateState):
    """Counts a short window's micro-batches as done without computing them."""

    def run(self, run: Any) -> None:
        if len(run.window) < run.plan.gradient_accumulation_steps:
            run.engine.batches_in_epoch += len(run.window) - run.window_pos
            run.window_pos = len(run.window)
            run.window_complete = True
            run.epoch_had_batches = True
            return
        super().run(run)


class SkipShortWindowWorkHarness(DropShortWindowHarness):
    def make_machine(self) -> MachineSpec:
        return default_machine().replace_state(SkipShortWindowWork())


def test_finds_an_accumulate_state_that_skips_the_short_window() -> None:
    message, rules, notes = falsifying(SkipShortWindowWorkHarness, max_examples=25)
    assert "the event trace breaks the loop's rules" in message
    assert "epoch must be" in message  # the grammar's micro-batch arithmetic
    assert len(rules) <= 2, notes
    assert drawn(notes, "accumulation") >= 2, notes


# --- (c) early stopping one evaluation late -------------------------------------------------------


class LateEarlyStopping(EarlyStoppingCallback):
    """Compares the misses with ``>`` where HF has ``>=``: stops one evaluation late."""

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
        name = args.metric_for_best_model
        value = (metrics or {}).get(name if name.startswith("eval_") else f"eval_{name}")
        if value is None:
            return
        self.check_metric_value(args, state, control, value)
        if self.early_stopping_patience_counter > self.early_stopping_patience:
            control.should_training_stop = True


class LateStopHarness(ScoredHarness):
    stopper = LateEarlyStopping


def test_finds_early_stopping_one_evaluation_late() -> None:
    message, rules, notes = falsifying(LateStopHarness, max_examples=25)
    assert "LateEarlyStopping(patience=2" in message
    assert "runs out of patience" in message
    assert len(rules) <= 1, notes
    metrics = re.search(r"Draw 2 \(metrics\): (\[.*?\])", notes)
    assert metrics, notes
    assert len(eval(metrics.group(1))) <= 4, notes
