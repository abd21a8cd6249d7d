"""The strategies, oracles and flag schedules of statetrain.testing, on their own."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from statetrain import EarlyStoppingCallback, Trainer
from statetrain.callbacks.progress import PrinterCallback
from statetrain.testing import (
    CONTROL_FLAGS,
    FlagScheduleCallback,
    FlagSetting,
    GrammarError,
    LoopHarness,
    RowStream,
    RunRecorder,
    ScriptedMetric,
    TinyClassifier,
    TrainingConfig,
    check_epoch_coverage,
    check_trace,
    control_flag_schedules,
    early_stopping_reference,
    interruption_points,
    metric_sequences,
    tiny_rows,
    training_configs,
)


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def train(config: TrainingConfig, out: Path, callbacks: list[Any]) -> Trainer:
    rows = tiny_rows(config.train_size)
    trainer = Trainer(
        model=TinyClassifier(),
        args=config.training_arguments(str(out)),
        train_dataset=RowStream(rows) if config.iterable else rows,
        eval_dataset=tiny_rows(config.eval_size, seed=1) if config.eval_size else None,
        callbacks=callbacks,
    )
    trainer.pop_callback(PrinterCallback)
    trainer.train()
    return trainer


# --- training configurations ------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(training_configs(max_total_steps=5))
def test_a_drawn_configuration_runs_as_long_as_it_says(tmp_path_factory: Any, config: TrainingConfig) -> None:
    recorder = RunRecorder()
    trainer = train(config, tmp_path_factory.mktemp("run"), [recorder])
    assert trainer.state.global_step == config.total_steps <= 5
    check_trace(recorder.trace, gradient_accumulation_steps=config.accumulation)
    check_epoch_coverage(
        recorder.trace, recorder.epoch_ends, max_steps=config.total_steps, has_length=not config.iterable
    )


@given(training_configs())
def test_iterable_configurations_carry_max_steps(config: TrainingConfig) -> None:
    if config.iterable:
        assert config.max_steps is not None


def test_iterable_passes_that_end_mid_window_are_drawn() -> None:
    # such a pass ends with a short window that takes its own step; the harness must reach it
    found = find(training_configs(iterable=True), lambda c: c.micro_batches_per_epoch % c.accumulation != 0)
    assert found.iterable and found.micro_batches_per_epoch % found.accumulation != 0


def test_training_arguments_take_overrides_and_restore_callbacks() -> None:
    config = TrainingConfig(train_size=5, batch_size=2, accumulation=2, epochs=3)
    assert (config.micro_batches_per_epoch, config.windows_per_epoch, config.total_steps) == (3, 2, 6)
    args = config.training_arguments("out", learning_rate=0.5)
    assert args.learning_rate == 0.5
    assert args.restore_callback_states_from_checkpoint is True
    assert args.gradient_accumulation_steps == 2
    assert config.replace(max_steps=4).total_steps == 4


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epochs": None}, "epochs or max_steps"),
        ({"iterable": True}, "needs max_steps"),
        ({"eval_strategy": "steps"}, "eval_size >= 1"),
        ({"save_strategy": "best"}, "save_strategy must be one of"),
    ],
)
def test_a_configuration_says_what_is_wrong(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainingConfig(**changes)


# --- schedules, metrics, interruptions ---------------------------------------------------------


@given(st.integers(0, 10), st.data())
def test_flag_schedules_are_sorted_and_in_range(max_steps: int, data: st.DataObject) -> None:
    schedule = data.draw(control_flag_schedules(max_steps))
    assert list(schedule) == sorted(set(schedule))
    assert all(1 <= s.step <= max_steps and s.flag in CONTROL_FLAGS for s in schedule)


@given(st.integers(0, 10), st.data())
def test_interruption_points_are_distinct_inner_steps(max_steps: int, data: st.DataObject) -> None:
    points = data.draw(interruption_points(max_steps))
    assert list(points) == sorted(set(points))
    assert all(1 <= p < max_steps for p in points)


@given(metric_sequences(min_size=2, max_size=5))
def test_metric_sequences_are_finite_floats(values: list[float]) -> None:
    assert 2 <= len(values) <= 5
    assert all(isinstance(v, float) and v == v and abs(v) <= 10 for v in values)


def test_a_flag_setting_names_a_real_flag() -> None:
    with pytest.raises(ValueError, match="unknown TrainerControl flag"):
        FlagSetting(1, "should_panic")
    callback = FlagScheduleCallback([FlagSetting(3, "should_training_stop"), FlagSetting(2, "should_log")])
    assert callback.first_stop() == 3
    control = SimpleNamespace(should_log=False)
    callback.on_step_end(None, SimpleNamespace(global_step=2), control)
    assert control.should_log is True


def test_a_scheduled_stop_ends_training_there(tmp_path: Path) -> None:
    config = TrainingConfig(train_size=6, batch_size=1, epochs=1)
    trainer = train(config, tmp_path, [FlagScheduleCallback([FlagSetting(4, "should_training_stop")])])
    assert trainer.state.global_step == 4


def test_a_scripted_metric_is_keyed_by_step() -> None:
    metric = ScriptedMetric([0.5, 0.25])
    assert [metric.value_at(step) for step in (0, 1, 2, 3)] == [0.5, 0.5, 0.25, 0.25]
    with pytest.raises(ValueError):
        ScriptedMetric([])


# --- the early-stopping reference rule ----------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "patience", "threshold", "greater", "expected"),
    [
        ([0.0, 0.0, 0.0], 2, 0.0, True, 2),  # ties are misses
        ([0.0, 1.0, 1.0, 1.0], 2, 0.0, True, 3),  # an improvement resets the count
        ([0.0, 0.5, 1.0], 1, 0.6, True, 1),  # not better by more than the threshold: a miss
        ([0.0, 0.5, 1.0, 1.0], 2, 0.6, True, 2),  # the best follows 0.5 (strictly better), so 1.0 gains only 0.5
        ([1.0, 0.5, 0.25], 1, 0.0, False, None),  # lower is better: always improving
        ([1.0], 1, 0.0, True, None),
    ],
)
def test_the_reference_rule(
    values: list[float], patience: int, threshold: float, greater: bool, expected: int | None
) -> None:
    got = early_stopping_reference(values, patience=patience, threshold=threshold, greater_is_better=greater)
    assert got == expected


@settings(max_examples=200)
@given(metric_sequences(), st.integers(1, 3), st.sampled_from([0.0, 0.25]), st.booleans())
def test_the_callback_agrees_with_the_reference_rule(
    values: list[float], patience: int, threshold: float, greater: bool
) -> None:
    """EarlyStoppingCallback fed as the Trainer feeds it (best metric updated after each on_evaluate)."""
    callback = EarlyStoppingCallback(early_stopping_patience=patience, early_stopping_threshold=threshold)
    args = SimpleNamespace(metric_for_best_model="score", greater_is_better=greater)
    state = SimpleNamespace(best_metric=None)
    stopped_at = None
    for index, value in enumerate(values):
        control = SimpleNamespace(should_training_stop=False)
        callback.on_evaluate(args, state, control, metrics={"eval_score": value})
        if control.should_training_stop:
            stopped_at = index
            break
        if state.best_metric is None or (value > state.best_metric if greater else value < state.best_metric):
            state.best_metric = value
    expected = early_stopping_reference(values, patience=patience, threshold=threshold, greater_is_better=greater)
    assert stopped_at == expected


# --- epoch coverage ----------------------------------------------------------------------------


def test_epoch_coverage_names_an_epoch_that_ended_early() -> None:
    trace = [
        ("on_train_begin", 0, 0.0),
        ("on_epoch_begin", 0, 0.0),
        ("on_step_begin", 0, 0.0),
        ("on_pre_optimizer_step", 0, 0.0),
        ("on_optimizer_step", 0, 0.0),
        ("on_step_end", 1, 0.5),
        ("on_epoch_end", 1, 0.5),
        ("on_log", 1, 0.5),
        ("on_train_end", 1, 0.5),
    ]
    recorder = RunRecorder()
    with pytest.raises(GrammarError, match="ended before its last micro-batch"):
        check_epoch_coverage(trace, recorder.epoch_ends, max_steps=2)
    check_epoch_coverage(trace, recorder.epoch_ends, max_steps=1)  # max_steps reached: fine


# --- the harness refuses what cannot resume exactly --------------------------------------------


@pytest.mark.parametrize(
    "override",
    [{"eval_on_start": True}, {"ignore_data_skip": True}, {"save_only_model": True}],
)
def test_the_harness_refuses_settings_that_do_not_resume_exactly(override: dict[str, Any]) -> None:
    class Refused(LoopHarness):
        def training_arguments(self, output_dir: str) -> Any:
            assert self.config is not None
            return self.config.training_arguments(output_dir, **override)

    harness = Refused()
    harness.config = TrainingConfig(train_size=4, eval_size=2)
    try:
        with pytest.raises(ValueError, match="LoopHarness cannot cut and resume"):
            harness.advance(1)
    finally:
        harness._healthy = False
        harness.teardown()


def test_statetrain_testing_imports_without_hypothesis() -> None:
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "import statetrain.testing as t\n"
        "assert t.check_trace and t.TraceRecorder\n"
        "try:\n    t.LoopHarness\nexcept ImportError as e:\n    assert 'statetrain[testing]' in str(e)\n"
        "else:\n    raise SystemExit('LoopHarness imported without hypothesis')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
