"""The callback protocol as transformers' CallbackHandler: instance handlers, duplicates, restored states."""

from __future__ import annotations

import logging
from typing import Any
from unittest import mock

import pytest

from statetrain import EarlyStoppingCallback, ExportableState, Trainer, TrainerCallback, TrainingArguments
from tests.helpers import TinyRegressor, regression_rows

BASE: dict[str, Any] = dict(
    per_device_train_batch_size=4, report_to="none", use_cpu=True, disable_tqdm=True, logging_steps=1
)


def trainer_with(tmp_path: Any, callbacks: list[Any], **options: Any) -> Trainer:
    args = TrainingArguments(str(tmp_path), **{**BASE, "max_steps": 2, "save_strategy": "no", **options})
    evaluating = options.get("eval_strategy", "no") != "no"
    return Trainer(
        model=TinyRegressor(),
        args=args,
        train_dataset=regression_rows(16),
        eval_dataset=regression_rows(4) if evaluating else None,
        callbacks=callbacks,
    )


def test_a_handler_assigned_on_the_instance_is_called(tmp_path: Any) -> None:
    seen: list[int] = []
    before = TrainerCallback()
    before.on_log = lambda args, state, control, **kw: seen.append(state.global_step)  # type: ignore[method-assign]
    trainer = trainer_with(tmp_path, [before])
    after = TrainerCallback()
    trainer.add_callback(after)
    after.on_step_end = lambda args, state, control, **kw: seen.append(-state.global_step)  # type: ignore[method-assign]
    trainer.train()
    assert [s for s in seen if s > 0] == [1, 2, 2]  # two step logs and the summary
    assert [s for s in seen if s < 0] == [-1, -2]


class Proxy:
    """Serves the handlers of another object through ``__getattr__``, as proxies and wrappers do."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


class StepCounter(TrainerCallback):
    def __init__(self) -> None:
        self.steps = 0

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.steps += 1


def test_handlers_served_by_getattr_are_called(tmp_path: Any) -> None:
    counter = StepCounter()
    wrapped = StepCounter()
    spy = mock.MagicMock(wraps=wrapped)  # a mock serves every handler the wrapped callback has
    trainer = trainer_with(tmp_path, [Proxy(counter)])
    trainer.add_callback(spy)
    trainer.train()
    assert counter.steps == 2
    assert spy.on_step_end.call_count == 2 and wrapped.steps == 2
    assert spy.on_train_end.call_count == 1


def test_a_second_callback_of_one_class_is_warned_about(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    trainer = trainer_with(tmp_path, [StepCounter()])
    with caplog.at_level(logging.WARNING, logger="statetrain"):
        trainer.add_callback(StepCounter)
    assert "You are adding a StepCounter to the callbacks, but there is already one" in caplog.text
    assert "DefaultFlowCallback\nStepCounter\nPrinterCallback" in caplog.text


def test_with_transformers_loaded_the_warnings_go_through_its_loggers(tmp_path: Any) -> None:
    # what transformers' own tests patch (test_duplicate_callback_warning, test_missing_stateful_callback_warning)
    transformers = pytest.importorskip("transformers")
    assert transformers.trainer_callback.logger is logging.getLogger("transformers.trainer_callback")
    with mock.patch("transformers.trainer_callback.logger.warning") as warned:
        trainer_with(tmp_path / "duplicate", [StepCounter, StepCounter])
    assert warned.called and "StepCounter" in warned.call_args[0][0]
    checkpoint = saved_run(tmp_path / "first")
    with mock.patch("transformers.trainer.logger.warning") as warned:
        resume(tmp_path / "second", checkpoint, [], restore=True)
    assert any("Remembers" in call[0][0] for call in warned.call_args_list)


def test_handler_methods_fire_the_event_as_hfs_callback_handler(tmp_path: Any) -> None:
    trainer = trainer_with(tmp_path, [StepCounter()])
    spy = mock.Mock(spec=TrainerCallback)
    for name in ("on_push_begin", "on_log", "on_step_begin"):
        getattr(spy, name).return_value = None  # a handler's non-None return replaces the control, as in HF
    trainer.add_callback(spy)
    control = trainer.callback_handler.on_push_begin(trainer.args, trainer.state, trainer.control)
    assert spy.on_push_begin.call_count == 1 and control is trainer.control
    assert spy.on_push_begin.call_args.kwargs["model"] is trainer.model  # HF passes the references too
    trainer.callback_handler.call_event("on_log", trainer.args, trainer.state, trainer.control, logs={"a": 1.0})
    assert spy.on_log.call_args.kwargs["logs"] == {"a": 1.0}
    trainer.control.should_log = True
    trainer.callback_handler.on_step_begin(trainer.args, trainer.state, trainer.control)
    assert not trainer.control.should_log  # the flags HF's handler clears at step begin


def test_load_callback_state_restores_the_stored_control(tmp_path: Any) -> None:
    trainer = trainer_with(tmp_path, [], save_strategy="steps", save_steps=2)
    trainer.train()
    again = trainer_with(tmp_path, [], restore_callback_states_from_checkpoint=True)
    again.state = type(trainer.state).load_from_json(str(tmp_path / "checkpoint-2" / "trainer_state.json"))
    assert not again.control.should_training_stop
    again._load_callback_state()
    assert again.control.should_training_stop  # HF's private hook, as transformers' test_trainer_callback calls it


class Remembers(TrainerCallback, ExportableState):
    """An exportable callback with constructor arguments and a counter."""

    def __init__(self, label: str = "new", every: int = 1) -> None:
        self.label, self.every, self.count = label, every, 0

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.count += self.every

    def state(self) -> dict[str, Any]:
        return {"args": {"label": self.label, "every": self.every}, "attributes": {"count": self.count}}


def saved_run(tmp_path: Any) -> Any:
    callbacks = [
        Remembers("first", 1),
        Remembers("second", 10),
        EarlyStoppingCallback(early_stopping_patience=5, early_stopping_threshold=0.2),
    ]
    trainer = trainer_with(
        tmp_path,
        callbacks,
        max_steps=2,
        save_strategy="steps",
        save_steps=2,
        eval_strategy="steps",
        eval_steps=2,
        metric_for_best_model="loss",
    )
    trainer.train()
    return tmp_path / "checkpoint-2"


def resume(tmp_path: Any, checkpoint: Any, callbacks: list[Any], restore: bool) -> Trainer:
    trainer = trainer_with(
        tmp_path,
        callbacks,
        max_steps=3,
        save_strategy="no",
        eval_strategy="steps",
        eval_steps=5,
        metric_for_best_model="loss",
        restore_callback_states_from_checkpoint=restore,
    )
    trainer.train(resume_from_checkpoint=str(checkpoint))
    return trainer


def exportables(trainer: Trainer) -> list[Any]:
    return [c for c in trainer.callback_handler.callbacks if isinstance(c, ExportableState)]


def test_restore_recreates_each_instance_from_its_stored_args(tmp_path: Any) -> None:
    checkpoint = saved_run(tmp_path / "first")
    fresh = [Remembers(), Remembers(), EarlyStoppingCallback(early_stopping_patience=1)]
    trainer = resume(tmp_path / "second", checkpoint, fresh, restore=True)
    first, second, stopper = exportables(trainer)
    assert (first.label, first.every, first.count) == ("first", 1, 3)  # 2 stored + 1 step after resuming
    assert (second.label, second.every, second.count) == ("second", 10, 30)
    assert (stopper.early_stopping_patience, stopper.early_stopping_threshold) == (5, 0.2)


def test_without_restore_only_the_early_stopping_counter_comes_back(tmp_path: Any) -> None:
    checkpoint = saved_run(tmp_path / "first")
    fresh = [Remembers(), EarlyStoppingCallback(early_stopping_patience=1)]
    trainer = resume(tmp_path / "second", checkpoint, fresh, restore=False)
    remembers, stopper = exportables(trainer)
    assert (remembers.label, remembers.count) == ("new", 1)
    assert stopper.early_stopping_patience == 1  # the new instance's settings (docs/differences.md item 6)


def test_a_stored_state_with_no_callback_is_warned_about(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    checkpoint = saved_run(tmp_path / "first")
    with caplog.at_level(logging.WARNING, logger="statetrain"):
        resume(tmp_path / "second", checkpoint, [EarlyStoppingCallback(early_stopping_patience=1)], restore=True)
    assert "does not have; ignoring them: Remembers" in caplog.text
