"""The compiled loop walks any declared table exactly as the plain reading of it does: the same
states, the same guard calls in the same order, the same stall, the same error."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statetrain.engine import compiled_loop
from statetrain.engine.default_machine import default_machine
from statetrain.engine.driver import MachineModel, StalledMachineError, compiled_source, drive, read_exits
from statetrain.engine.machine import Guard, MachineSpec, Transition
from statetrain.events import EventBus
from statetrain.events.event import Event
from statetrain.states.base import State

BUDGET = 60


class OutOfBudget(Exception):
    """Raised by a state once the walk is long enough; both loops must let it through."""


class Recorded(State):
    def __init__(self, name: str) -> None:
        self.name = name  # type: ignore[misc]

    def run(self, run: Any) -> None:
        run.trace.append(("state", self.name))
        if len(run.trace) > BUDGET:
            raise OutOfBudget(self.name)


def scripted(label: str) -> Guard:
    """A guard whose answers come from the run's random script, recorded in call order."""

    def test(run: Any) -> bool:
        answer = run.rng.random() < run.odds
        run.trace.append((label, answer))
        return answer

    return Guard(label, test)


@st.composite
def tables(draw: Any) -> MachineSpec:
    names = [f"s{i}" for i in range(draw(st.integers(1, 5)))] + ["done"]
    transitions = []
    for source in names[:-1]:
        for k in range(draw(st.integers(0, 4))):
            guards = tuple(scripted(f"{source}.{k}.{g}") for g in range(draw(st.integers(0, 3))))
            transitions.append(Transition(source, f"t{k}", draw(st.sampled_from(names)), guards))
    return MachineSpec([Recorded(n) for n in names], transitions, initial=names[0], final="done")


def context(seed: int, odds: float) -> SimpleNamespace:
    return SimpleNamespace(
        trace=[], rng=random.Random(seed), odds=odds, engine=SimpleNamespace(current_state=""), bus=EventBus()
    )


def plain_reading(spec: MachineSpec, run: Any) -> None:
    """What the table says, read literally: run the state, take its first exit whose guards all hold."""
    name = spec.initial
    while True:
        spec.states[name].run(run)
        if name == spec.final:
            return
        for transition in spec.transitions_from(name):
            if all(guard.test(run) for guard in transition.guards):
                name = transition.dest
                break
        else:
            raise StalledMachineError(name)


def outcome(walk: Any, spec: MachineSpec, run: Any) -> tuple[str, str]:
    try:
        walk(spec, run)
    except OutOfBudget as exc:
        return ("budget", str(exc))
    except StalledMachineError as exc:
        return ("stalled", str(exc).split("'")[1] if "'" in str(exc) else str(exc))
    return ("finished", "")


@settings(max_examples=150, deadline=None)
@given(spec=tables(), seed=st.integers(0, 10**6), odds=st.sampled_from([0.2, 0.5, 0.8]))
def test_the_compiled_loop_walks_any_table_as_the_table_reads(spec: MachineSpec, seed: int, odds: float) -> None:
    expected_run, compiled_run = context(seed, odds), context(seed, odds)
    expected = outcome(plain_reading, spec, expected_run)
    got = outcome(lambda s, r: drive(s, r), spec, compiled_run)
    assert got == expected
    assert compiled_run.trace == expected_run.trace  # same states, same guards asked, same answers
    if expected[0] == "finished":
        assert compiled_run.engine.current_state == "done" == compiled_run.machine_model.state
    elif expected[0] == "budget":
        assert compiled_run.engine.current_state == expected[1]  # the state that raised is recorded


def test_a_state_the_machine_does_not_declare_is_named() -> None:
    spec = MachineSpec([Recorded("a"), Recorded("done")], [Transition("a", "go", "done")], initial="a")
    with pytest.raises(StalledMachineError, match="'nowhere', which the machine does not declare"):
        drive(spec, context(0, 0.5), start="nowhere")  # transitions adds an unknown initial state


def test_state_events_and_the_exception_event_are_heard_on_the_compiled_loop() -> None:
    spec = MachineSpec(
        [Recorded("a"), Recorded("b"), Recorded("done")],
        [Transition("a", "go", "b"), Transition("b", "end", "done")],
        initial="a",
    )
    run = context(0, 0.5)
    heard: list[tuple[str, str]] = []
    run.bus.on(Event.ON_STATE_ENTER, lambda data: heard.append(("enter", data.payload["state_name"])))
    run.bus.on(Event.ON_STATE_EXIT, lambda data: heard.append(("exit", data.payload["state_name"])))
    run.fire = lambda event, **payload: run.bus.fire(event, None, None, None, {}, payload)
    drive(spec, run)
    assert heard == [("enter", "a"), ("exit", "a"), ("enter", "b"), ("exit", "b"), ("enter", "done"), ("exit", "done")]

    class Failing(State):
        name = "b"

        def run(self, run: Any) -> None:
            raise RuntimeError("boom")

    spec.states["b"] = Failing()
    failures: list[tuple[str, str]] = []
    run.bus.on(
        Event.ON_EXCEPTION, lambda data: failures.append((data.payload["state_name"], str(data.payload["exception"])))
    )
    with pytest.raises(RuntimeError, match="boom"):
        drive(spec, run)
    assert failures == [("b", "boom")] and run.engine.current_state == "b"


def test_conditions_that_must_fail_are_compiled_negated() -> None:
    """``transitions`` also knows conditions that must be false (``unless``); the loop honours them."""
    answers = {"yes": True, "no": False}
    visited: list[str] = []
    runs = {name: (lambda run, name=name: visited.append(name)) for name in ("a", "b", "c", "done")}
    exits = {
        "a": [(((lambda: answers["yes"], False),), "b"), ((), "c")],  # yes must be false: not taken
        "b": [],
        "c": [(((lambda: answers["no"], False), (lambda: answers["yes"], True)), "done")],
        "done": [],
    }
    loop = compiled_loop.compile_loop(list(runs), runs, exits, "done", "state")
    model = MachineModel()
    model.state = "a"
    run = SimpleNamespace(engine=SimpleNamespace(current_state=""), bus=EventBus())
    loop(run, model, run.bus, Event.ON_STATE_ENTER, Event.ON_STATE_EXIT, None, None)
    assert visited == ["a", "c", "done"]


def test_machines_of_one_shape_share_one_compiled_loop() -> None:
    """Compiling costs once per shape and process, not once per train() call."""
    first, second = default_machine(), default_machine()
    shapes = []
    for spec in (first, second):
        model = MachineModel()
        built = spec.build(SimpleNamespace(), model)
        shapes.append(compiled_loop.shape_of(list(spec.states), read_exits(spec, built, model)))
    assert shapes[0] == shapes[1]
    assert compiled_loop._factory(shapes[0], "done", "state") is compiled_loop._factory(shapes[1], "done", "state")
    source = compiled_source(first)
    assert source == compiled_loop.loop_source(shapes[0], "done", "state")
    for index, name in enumerate(first.states):  # every state has its own branch and call site
        assert source.count(f"if name == {name!r}:") == 1 and source.count(f"run_{index}(run)") == 1
