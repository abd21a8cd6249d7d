"""One ``transitions.Machine`` per declaration: reused by drives (of one spec or of equal ones),
each bound to its own run, another one for a spec edited in place, and left with no model once a
drive ends."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from statetrain.engine import shared_machine
from statetrain.engine.default_machine import default_machine
from statetrain.engine.driver import drive
from statetrain.engine.machine import Guard, MachineSpec, Transition
from statetrain.events import EventBus
from statetrain.states.base import State

LEFT = Guard("go left", lambda run: run.left)


class Visit(State):
    def __init__(self, name: str) -> None:
        self.name = name  # type: ignore[misc]

    def run(self, run: Any) -> None:
        run.visited.append(self.name)


def fork() -> MachineSpec:
    return MachineSpec(
        [Visit("init"), Visit("left"), Visit("right"), Visit("done")],
        [
            Transition("init", "to_left", "left", (LEFT,)),
            Transition("init", "to_right", "right"),
            Transition("left", "end", "done"),
            Transition("right", "end", "done"),
        ],
    )


def built_machine(spec: MachineSpec) -> Any:
    return shared_machine._BUILT[shared_machine.declaration(spec)].machine


def context(left: bool) -> SimpleNamespace:
    return SimpleNamespace(left=left, visited=[], engine=SimpleNamespace(current_state=""), bus=EventBus())


@pytest.mark.parametrize("compiled", [True, False])
def test_drives_share_one_machine_each_with_its_own_run(compiled: bool) -> None:
    spec = fork()
    runs = [context(left=True), context(left=False), context(left=True)]
    machines = []
    for run in runs:
        drive(spec, run, compiled=compiled)
        machines.append(built_machine(spec))
    assert [run.visited for run in runs] == [
        ["init", "left", "done"],
        ["init", "right", "done"],
        ["init", "left", "done"],
    ]
    assert machines[0] is machines[1] is machines[2]
    assert machines[0].models == []  # each drive removed its model
    for run in runs:  # and took its run's guard bindings off it
        assert not [name for name in vars(run.machine_model) if name.startswith("_statetrain_guard")]


def test_specs_that_declare_the_same_graph_share_a_machine() -> None:
    """Every Trainer assembles its own default spec: the second one builds nothing."""
    first, second = default_machine(), default_machine()
    assert first is not second and first.transitions[0] is not second.transitions[0]
    assert shared_machine.declaration(first) == shared_machine.declaration(second)
    third = fork()
    assert shared_machine.declaration(third) != shared_machine.declaration(first)


def test_a_spec_edited_in_place_is_built_again_and_followed() -> None:
    spec = fork()
    drive(spec, first := context(left=True))
    before = built_machine(spec)
    del spec.transitions[0]  # no more way left
    drive(spec, second := context(left=True))
    assert first.visited == ["init", "left", "done"] and second.visited == ["init", "right", "done"]
    assert built_machine(spec) is not before


def test_a_guard_replaced_under_the_same_label_is_not_mistaken_for_the_old_one() -> None:
    spec = fork()
    drive(spec, context(left=True))
    spec.transitions[0] = Transition("init", "to_left", "left", (Guard("go left", lambda run: not run.left),))
    drive(spec, run := context(left=True))
    assert run.visited == ["init", "right", "done"]


def test_a_drive_that_raises_removes_its_model_and_a_nested_drive_keeps_its_own_run() -> None:
    spec = fork()

    class Nested(State):
        name = "left"

        def run(self, run: Any) -> None:
            run.visited.append("left")
            inner = context(left=False)
            drive(spec, inner)  # the same declaration, driven again inside a state
            run.inner = inner.visited
            if run.fail:
                raise RuntimeError("stop here")

    spec.states["left"] = Nested()
    outer = context(left=True)
    outer.fail = False
    drive(spec, outer)
    assert outer.visited == ["init", "left", "done"] and outer.inner == ["init", "right", "done"]
    failing = context(left=True)
    failing.fail = True
    with pytest.raises(RuntimeError, match="stop here"):
        drive(spec, failing)
    assert built_machine(spec).models == []
