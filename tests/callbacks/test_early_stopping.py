"""EarlyStoppingCallback stops where HF's rule says, persists its counter, and rejects bad setups."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from statetrain import Trainer, TrainingArguments
from statetrain.callbacks.early_stopping import EarlyStoppingCallback
from tests.helpers import TinyRegressor, regression_rows

KEY = "EarlyStoppingCallback"
TRAIN_ROWS = regression_rows(48, seed=0)
EVAL_ROWS = regression_rows(4, seed=1)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny tensors: extra intra-op threads only add contention on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- the independent reference ---------------------------------------------------------------
def reference(values: list[float], patience: int, threshold: float, greater: bool) -> tuple[int | None, int]:
    """(1-based evaluation that stops training or None, counter after the last decision).

    Two rules interleave per evaluation: early stopping first judges the value against the best of
    the earlier evaluations (strictly better AND by more than the threshold), then the Trainer
    folds the value into its best (starting from -inf/+inf, strictly better, no threshold).
    """
    trainer_best: float | None = None
    misses = 0
    for index, value in enumerate(values, start=1):
        if trainer_best is None:
            misses = 0
        else:
            gain = value - trainer_best if greater else trainer_best - value
            strictly_better = gain > 0 if not math.isnan(gain) else False
            # abs() of the difference, as in HF; inf - inf is nan and never exceeds the threshold.
            margin = abs(value - trainer_best)
            misses = 0 if (strictly_better and margin > threshold) else misses + 1
        if trainer_best is None:
            trainer_best = -math.inf if greater else math.inf
        if (value > trainer_best) if greater else (value < trainer_best):
            trainer_best = value
        if misses >= patience:
            return index, misses
    return None, misses


def test_reference_on_hand_checked_cases() -> None:
    assert reference([1.0, 0.9, 0.95, 0.95], 2, 0.0, greater=False) == (4, 2)
    assert reference([1.0, 0.9, 0.8], 1, 0.0, greater=False) == (None, 0)
    # 0.5 -> 0.75 gains exactly the threshold: not enough.
    assert reference([0.5, 0.75], 1, 0.25, greater=True) == (2, 1)
    # A first NaN leaves the Trainer's best at -inf, so anything finite then improves.
    assert reference([math.nan, 1.0, math.nan], 2, 0.0, greater=True) == (None, 1)


# --- driving a Trainer -----------------------------------------------------------------------
def filler(values: list[float], total: int, greater: bool) -> list[float]:
    """The sequence, then ever-better values so evaluations past it do not cause stops on their own."""
    step = 1e6 if greater else -1e6
    return values + [step * (k + 1) for k in range(total - len(values))]


def scripted_metrics(values: list[float]) -> Any:
    """compute_metrics returning the next scripted value as ``score``."""
    feed = iter(values)

    def compute(prediction: Any) -> dict[str, float]:
        return {"score": next(feed)}

    return compute


def options(max_steps: int, greater: bool, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict(
        eval_strategy="steps",
        eval_steps=1,
        logging_strategy="no",
        max_steps=max_steps,
        metric_for_best_model="score",
        greater_is_better=greater,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        seed=3,
    )
    base.update(overrides)
    return base


def run_statetrain(
    out: str, values: list[float], callbacks: list[Any], greater: bool, max_steps: int, **overrides: Any
) -> Trainer:
    torch.manual_seed(0)
    trainer = Trainer(
        model=TinyRegressor(),
        args=TrainingArguments(out, **options(max_steps, greater, **overrides)),
        train_dataset=TRAIN_ROWS,
        eval_dataset=EVAL_ROWS,
        compute_metrics=scripted_metrics(filler(values, max_steps, greater)),
        callbacks=callbacks,
    )
    trainer.train()
    return trainer


def stored_counter(trainer: Trainer) -> int:
    entry = trainer.state.stateful_callbacks[KEY]
    assert isinstance(entry, dict)
    return int(entry["attributes"]["early_stopping_patience_counter"])


metric_value = st.one_of(
    st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0, -1.0]),  # ties and exact threshold boundaries
    st.floats(-2.0, 2.0, allow_nan=False),
    st.sampled_from([math.nan, math.inf, -math.inf]),
)


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(metric_value, min_size=1, max_size=12),
    patience=st.integers(1, 4),
    threshold=st.one_of(st.sampled_from([0.0, 0.25, 0.5]), st.floats(0.0, 0.5)),
    greater=st.booleans(),
)
# Gains of exactly the threshold are not improvements, in both directions.
@example(values=[0.5, 0.75, 1.0], patience=1, threshold=0.25, greater=True)
@example(values=[1.0, 0.5, 0.0, -1.0], patience=2, threshold=0.5, greater=False)
def test_stops_exactly_where_the_reference_rule_does(
    tmp_path_factory: pytest.TempPathFactory, values: list[float], patience: int, threshold: float, greater: bool
) -> None:
    max_steps = len(values) + 5
    expected_stop, expected_counter = reference(filler(values, max_steps, greater), patience, threshold, greater)
    callback = EarlyStoppingCallback(early_stopping_patience=patience, early_stopping_threshold=threshold)
    trainer = run_statetrain(str(tmp_path_factory.mktemp("es")), values, [callback], greater, max_steps)
    # One evaluation per step: the stopping evaluation is the global step training ended on.
    assert trainer.state.global_step == (expected_stop if expected_stop is not None else max_steps)
    assert callback.early_stopping_patience_counter == expected_counter
    assert stored_counter(trainer) == expected_counter
    assert trainer.state.stateful_callbacks[KEY] == callback.state()


# --- parity with transformers ------------------------------------------------------------------
PARITY_CASES = [
    ([1.0, 0.9, 0.95, 0.95, 0.8, 0.7], 2, 0.0, False),
    ([0.5, 0.6, 0.65, 0.66, 0.9, 0.91], 1, 0.05, True),
    ([3.0, math.nan, 2.0, 2.0, 2.0, 2.5, 1.0], 3, 0.0, False),
    ([0.1, 0.2, 0.3, 0.4], 2, 0.0, True),  # never stops inside the sequence
]


@pytest.mark.parametrize(("values", "patience", "threshold", "greater"), PARITY_CASES)
def test_stops_at_the_same_step_as_transformers(
    tmp_path: Any, values: list[float], patience: int, threshold: float, greater: bool
) -> None:
    transformers = pytest.importorskip("transformers")
    max_steps = len(values) + 5
    torch.manual_seed(0)
    hf_callback = transformers.EarlyStoppingCallback(patience, threshold)
    hf = transformers.Trainer(
        model=TinyRegressor(),
        args=transformers.TrainingArguments(str(tmp_path / "hf"), **options(max_steps, greater)),
        train_dataset=TRAIN_ROWS,
        eval_dataset=EVAL_ROWS,
        compute_metrics=scripted_metrics(filler(values, max_steps, greater)),
        callbacks=[hf_callback],
    )
    hf.train()
    ours = EarlyStoppingCallback(patience, threshold)
    st_trainer = run_statetrain(str(tmp_path / "st"), values, [ours], greater, max_steps)
    assert st_trainer.state.global_step == hf.state.global_step
    assert ours.early_stopping_patience_counter == hf_callback.early_stopping_patience_counter
    assert ours.state() == hf_callback.state()
    expected_stop, _ = reference(filler(values, max_steps, greater), patience, threshold, greater)
    assert hf.state.global_step == (expected_stop or max_steps)


# --- several instances ---------------------------------------------------------------------------
def test_two_instances_keep_separate_counters_in_one_list_entry(tmp_path: Any) -> None:
    values = [1.0 - 0.1 * k for k in range(10)]  # improves by 0.1 each evaluation
    strict = EarlyStoppingCallback(early_stopping_patience=50, early_stopping_threshold=0.0)
    coarse = EarlyStoppingCallback(early_stopping_patience=100, early_stopping_threshold=0.5)
    trainer = run_statetrain(str(tmp_path), values, [strict, coarse], greater=False, max_steps=len(values))
    assert trainer.state.global_step == len(values)
    entry = trainer.state.stateful_callbacks[KEY]
    assert isinstance(entry, list) and len(entry) == 2, "one entry per instance, not one per evaluation"
    assert entry == [strict.state(), coarse.state()]
    assert entry[0]["attributes"]["early_stopping_patience_counter"] == 0
    assert entry[1]["attributes"]["early_stopping_patience_counter"] == len(values) - 1
    assert [e["args"]["early_stopping_patience"] for e in entry] == [50, 100]


def test_the_first_instance_to_run_out_of_patience_stops_training(tmp_path: Any) -> None:
    values = [1.0, 1.0, 1.0, 1.0, 1.0]
    patient = EarlyStoppingCallback(early_stopping_patience=4)
    impatient = EarlyStoppingCallback(early_stopping_patience=2)
    trainer = run_statetrain(str(tmp_path), values, [patient, impatient], greater=False, max_steps=10)
    assert trainer.state.global_step == 3
    counters = [e["attributes"]["early_stopping_patience_counter"] for e in trainer.state.stateful_callbacks[KEY]]
    assert counters == [2, 2]


def test_a_second_training_run_rebuilds_rather_than_extends_the_entry(tmp_path: Any) -> None:
    a, b = EarlyStoppingCallback(5), EarlyStoppingCallback(6)
    trainer = run_statetrain(str(tmp_path), [1.0, 0.5], [a, b], greater=False, max_steps=3)
    trainer.compute_metrics = scripted_metrics([1.0, 0.5, 0.25])
    trainer.train()
    assert len(trainer.state.stateful_callbacks[KEY]) == 2


# --- errors and warnings -------------------------------------------------------------------------
def root_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def test_missing_metric_for_best_model_is_a_clear_error(tmp_path: Any) -> None:
    with pytest.raises(Exception) as caught:
        run_statetrain(
            str(tmp_path),
            [1.0],
            [EarlyStoppingCallback()],
            greater=False,
            max_steps=2,
            metric_for_best_model=None,
            greater_is_better=None,
        )
    cause = root_cause(caught.value)
    assert isinstance(cause, ValueError)
    assert "metric_for_best_model" in str(cause)


def test_eval_strategy_no_is_a_clear_error(tmp_path: Any) -> None:
    with pytest.raises(Exception) as caught:
        run_statetrain(str(tmp_path), [1.0], [EarlyStoppingCallback()], greater=False, max_steps=2, eval_strategy="no")
    cause = root_cause(caught.value)
    assert isinstance(cause, ValueError)
    assert "eval_strategy" in str(cause)


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"early_stopping_patience": 0}, ValueError, "early_stopping_patience"),
        ({"early_stopping_patience": -3}, ValueError, ">= 1"),
        ({"early_stopping_patience": 1.5}, TypeError, "int"),
        ({"early_stopping_patience": True}, TypeError, "int"),
        ({"early_stopping_threshold": -0.1}, ValueError, "early_stopping_threshold"),
        ({"early_stopping_threshold": math.nan}, ValueError, ">= 0"),
        ({"early_stopping_threshold": "0.1"}, TypeError, "number"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict[str, Any], error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        EarlyStoppingCallback(**kwargs)


def test_none_threshold_means_zero() -> None:
    assert EarlyStoppingCallback(early_stopping_threshold=None).early_stopping_threshold == 0.0


def args_for(**overrides: Any) -> SimpleNamespace:
    base = dict(
        metric_for_best_model="loss", eval_strategy="steps", greater_is_better=False, load_best_model_at_end=False
    )
    base.update(overrides)
    return SimpleNamespace(**base)


def test_warns_without_load_best_model_at_end(caplog: pytest.LogCaptureFixture) -> None:
    callback = EarlyStoppingCallback()
    state = SimpleNamespace(best_metric=None, stateful_callbacks={})
    with caplog.at_level(logging.WARNING):
        callback.on_train_begin(args_for(), state, SimpleNamespace())
    assert "load_best_model_at_end" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        callback.on_train_begin(args_for(load_best_model_at_end=True), state, SimpleNamespace())
    assert "load_best_model_at_end" not in caplog.text


def test_missing_metric_warns_and_decides_nothing(caplog: pytest.LogCaptureFixture) -> None:
    callback = EarlyStoppingCallback(early_stopping_patience=1)
    callback.early_stopping_patience_counter = 3
    state = SimpleNamespace(best_metric=0.5, stateful_callbacks={})
    control = SimpleNamespace(should_training_stop=False)
    with caplog.at_level(logging.WARNING):
        callback.on_evaluate(args_for(metric_for_best_model="accuracy"), state, control, metrics={"eval_loss": 1.0})
    assert "eval_accuracy" in caplog.text
    assert callback.early_stopping_patience_counter == 3
    assert control.should_training_stop is False


def test_prefixed_metric_name_is_used_as_is() -> None:
    callback = EarlyStoppingCallback(early_stopping_patience=1)
    state = SimpleNamespace(best_metric=0.5, stateful_callbacks={})
    control = SimpleNamespace(should_training_stop=False)
    callback.on_evaluate(args_for(metric_for_best_model="eval_loss"), state, control, metrics={"eval_loss": 0.7})
    assert control.should_training_stop is True
    assert callback.early_stopping_patience_counter == 1


# --- exportable state ----------------------------------------------------------------------------
def test_state_round_trips_and_matches_the_hf_layout() -> None:
    transformers = pytest.importorskip("transformers")
    ours = EarlyStoppingCallback(3, 0.125)
    ours.early_stopping_patience_counter = 2
    rebuilt = EarlyStoppingCallback.from_state(ours.state())
    assert rebuilt.state() == ours.state()
    assert rebuilt.early_stopping_patience_counter == 2
    theirs = transformers.EarlyStoppingCallback(3, 0.125)
    theirs.early_stopping_patience_counter = 2
    assert ours.state() == theirs.state()
