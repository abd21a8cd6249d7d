"""The bus: order, filters, payload replacement, error naming, HF-style objects, dispatch tables."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from statetrain.callbacks.base import TrainerCallback
from statetrain.context.state import TrainerControl
from statetrain.events import Event, EventBus, HandlerError

REFS = {
    "model": "M",
    "processing_class": None,
    "optimizer": "O",
    "lr_scheduler": "S",
    "train_dataloader": None,
    "eval_dataloader": None,
}


def fire(bus: EventBus, event: Event, control: TrainerControl | None = None, **payload: Any) -> Any:
    control = control if control is not None else TrainerControl()
    return bus.fire(event, SimpleNamespace(name="args"), SimpleNamespace(global_step=0), control, REFS, payload)


def test_priority_then_registration_order() -> None:
    bus = EventBus()
    seen: list[str] = []
    bus.on(Event.ON_LOG, lambda d: seen.append("a"))
    bus.on(Event.ON_LOG, lambda d: seen.append("b"), priority=5)
    bus.on(Event.ON_LOG, lambda d: seen.append("c"))
    bus.on(Event.ON_LOG, lambda d: seen.append("d"), priority=-1)
    fire(bus, Event.ON_LOG, logs={})
    assert seen == ["b", "a", "c", "d"]


def test_objects_and_functions_share_one_order() -> None:
    seen: list[str] = []

    class First(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            seen.append("object")

    bus = EventBus()
    bus.on(Event.ON_STEP_END, lambda d: seen.append("early"), priority=1)
    bus.add_callback(First())
    bus.on(Event.ON_STEP_END, lambda d: seen.append("late"))
    fire(bus, Event.ON_STEP_END)
    assert seen == ["early", "object", "late"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"every": 3}, [3, 6, 9]),
        ({"once": True}, [1]),
        ({"once": 4}, [4]),
        ({"when": lambda d: d["n"] % 2 == 0}, [2, 4, 6, 8, 10]),
        ({"every": 2, "when": lambda d: d["n"] > 5}, [6, 8, 10]),
    ],
)
def test_filters(options: dict[str, Any], expected: list[int]) -> None:
    bus = EventBus()
    hits: list[int] = []
    bus.on(Event.ON_STEP_END, lambda d: hits.append(d.payload["n"]), **options)
    for n in range(1, 11):
        fire(bus, Event.ON_STEP_END, n=n)
    assert hits == expected


def test_event_call_builds_filtered_subscription() -> None:
    bus = EventBus()
    hits: list[int] = []
    bus.on(Event.ON_STEP_END(every=5), lambda d: hits.append(d.payload["n"]))
    for n in range(1, 16):
        fire(bus, Event.ON_STEP_END, n=n)
    assert hits == [5, 10, 15]


@pytest.mark.parametrize("bad", [{"every": 0}, {"every": -2}, {"once": 0}, {"when": 3}])
def test_bad_filter_arguments_fail_at_registration(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        EventBus().on(Event.ON_LOG, lambda d: None, **bad)


def test_zero_subscriber_event_still_clears_hf_flags() -> None:
    bus = EventBus()
    control = TrainerControl(should_log=True, should_evaluate=True, should_save=True, should_training_stop=True)
    assert not bus.wants(Event.ON_STEP_BEGIN)
    out = fire(bus, Event.ON_STEP_BEGIN, control=control)
    assert out is control
    assert (out.should_log, out.should_evaluate, out.should_save) == (False, False, False)
    assert out.should_training_stop is True


def test_only_defined_methods_are_registered() -> None:
    class OnlyLog(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            pass

    bus = EventBus()
    bus.add_callback(OnlyLog())
    assert bus.describe() == {"on_log": ["OnlyLog.on_log"]}
    assert not bus.wants(Event.ON_STEP_END)


def test_transformers_callbacks_register_only_their_overrides() -> None:
    transformers = pytest.importorskip("transformers")

    class HFStyle(transformers.TrainerCallback):
        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            pass

    bus = EventBus()
    bus.add_callback(HFStyle)
    assert bus.describe() == {"on_epoch_end": ["HFStyle.on_epoch_end"]}


def test_hf_object_receives_trio_and_references_and_may_replace_control() -> None:
    received: dict[str, Any] = {}
    replacement = TrainerControl(should_training_stop=True)

    class Grab:
        def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> TrainerControl:
            received.update(kwargs, args=args, state=state)
            return replacement

    bus = EventBus()
    bus.add_callback(Grab())
    out = fire(bus, Event.ON_LOG, logs={"loss": 1.0})
    assert out is replacement
    assert received["logs"] == {"loss": 1.0}
    for name in REFS:
        assert name in received
    assert received["model"] == "M" and received["optimizer"] == "O"


def test_function_may_replace_replaceable_payload_only() -> None:
    bus = EventBus()

    def double(d: Any) -> None:
        d.loss = d.loss * 2

    bus.on(Event.ON_AFTER_LOSS, double)
    payload = {"loss": 3.0, "outputs": None, "inputs": {}}
    bus.fire(Event.ON_AFTER_LOSS, None, None, TrainerControl(), REFS, payload)
    assert payload["loss"] == 6.0

    bus2 = EventBus()

    def bad(d: Any) -> None:
        d.logs = {}

    bus2.on(Event.ON_LOG, bad)
    with pytest.raises(HandlerError, match="cannot be replaced on event on_log"):
        fire(bus2, Event.ON_LOG, logs={})


def test_dict_return_replaces_payload_and_unknown_keys_are_rejected() -> None:
    bus = EventBus()
    bus.on(Event.ON_BEFORE_FORWARD, lambda d: {"inputs": {"x": 1}})
    payload: dict[str, Any] = {"inputs": {"x": 0}}
    bus.fire(Event.ON_BEFORE_FORWARD, None, None, TrainerControl(), REFS, payload)
    assert payload["inputs"] == {"x": 1}
    bus.on(Event.ON_BEFORE_FORWARD, lambda d: {"loss": 1})
    with pytest.raises(HandlerError, match="replaceable on this event"):
        bus.fire(Event.ON_BEFORE_FORWARD, None, None, TrainerControl(), REFS, {"inputs": {}})


def test_handler_error_names_handler_and_event() -> None:
    class Broken(TrainerCallback):
        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            raise KeyError("boom")

    bus = EventBus()
    bus.add_callback(Broken())
    with pytest.raises(HandlerError) as info:
        fire(bus, Event.ON_EPOCH_BEGIN)
    assert "Broken.on_epoch_begin" in str(info.value)
    assert "on_epoch_begin" in str(info.value)
    assert isinstance(info.value.__cause__, KeyError)

    def exploding(d: Any) -> None:
        raise RuntimeError("bad")

    bus.on(Event.ON_LOG, exploding)
    with pytest.raises(HandlerError, match="exploding"):
        fire(bus, Event.ON_LOG, logs={})


def test_add_pop_remove_callbacks_like_hf() -> None:
    class A(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            pass

    class B(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            pass

    bus = EventBus()
    a = bus.add_callback(A)
    b = B()
    bus.add_callback(b)
    assert isinstance(a, A) and bus.callbacks == [a, b]
    assert bus.pop_callback(A) is a
    assert bus.callbacks == [b]
    assert bus.pop_callback(A) is None
    bus.remove_callback(b)
    assert bus.callbacks == [] and not bus.wants(Event.ON_LOG)


def test_off_removes_function_handler() -> None:
    bus = EventBus()
    hits: list[int] = []
    handle = bus.on(Event.ON_LOG, lambda d: hits.append(1))
    fire(bus, Event.ON_LOG, logs={})
    bus.off(handle)
    fire(bus, Event.ON_LOG, logs={})
    assert hits == [1] and not bus.wants(Event.ON_LOG)


def test_decorator_form() -> None:
    bus = EventBus()
    hits: list[str] = []

    @bus.on(Event.ON_TRAIN_END)
    def record(d: Any) -> None:
        hits.append(d.event.value)

    fire(bus, Event.ON_TRAIN_END)
    assert hits == ["on_train_end"]


def test_dispatch_table_is_precomputed_not_scanned() -> None:
    """Firing must not look up handler methods on callback objects (no per-fire scan)."""
    calls: list[str] = []

    class Spy(TrainerCallback):
        def __getattribute__(self, name: str) -> Any:
            if name.startswith("on_"):
                calls.append(name)
            return object.__getattribute__(self, name)

        def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            pass

    bus = EventBus()
    bus.add_callback(Spy())
    calls.clear()
    for _ in range(5):
        fire(bus, Event.ON_STEP_END)
        fire(bus, Event.ON_LOG, logs={})
    assert calls == []


def test_hf_event_list_matches_transformers() -> None:
    transformers = pytest.importorskip("transformers")
    hf_names = {n for n in vars(transformers.TrainerCallback) if n.startswith("on_")}
    ours = {e.value for e in Event if e.is_hf_event}
    assert ours == hf_names and len(ours) == 16
