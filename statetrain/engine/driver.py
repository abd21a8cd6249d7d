"""The generic driver: it names no state. It runs the current state, then takes the first enabled
transition out of it, until the final state has run. The declared table alone decides the flow.

The driver reads the same guard objects the machine was built with to pick the transition, then
fires only that trigger on the ``transitions.Machine`` (which checks the guards again and moves).
Failed triggers are never fired: in ``transitions`` each costs a few microseconds of event
dispatch and logging, several times per step on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from statetrain.engine.machine import MachineSpec
from statetrain.events.event import Event


class StalledMachineError(RuntimeError):
    """No transition out of a state was enabled: the loop would stall. Names the state."""


class _MachineModel:
    """The object ``transitions`` drives; it only carries the current state name."""

    state: str


def drive(spec: MachineSpec, run: Any, start: str | None = None) -> None:
    """Run ``spec`` on the run context from ``start`` (default: the initial state) to the final state."""
    model = _MachineModel()
    machine = spec.build(run, model, initial=start)
    exits: dict[str, list[tuple[tuple[Any, ...], Callable[[], bool]]]] = {
        name: [
            (tuple(g.test for g in t.guards), _trigger(machine, model, t.trigger)) for t in spec.transitions_from(name)
        ]
        for name in spec.states
    }
    states = spec.states
    final = spec.final
    bus = run.bus
    while True:
        name = model.state
        run.engine.current_state = name
        if bus.wants(Event.ON_STATE_ENTER):
            run.fire(Event.ON_STATE_ENTER, state_name=name)
        try:
            states[name].run(run)
        except BaseException as exc:
            if bus.wants(Event.ON_EXCEPTION):
                run.fire(Event.ON_EXCEPTION, state_name=name, exception=exc)
            raise
        if bus.wants(Event.ON_STATE_EXIT):
            run.fire(Event.ON_STATE_EXIT, state_name=name)
        if name == final:
            return
        for tests, fire in exits[name]:
            if all(test(run) for test in tests):
                if not fire():
                    raise StalledMachineError(f"the machine refused the transition it was asked for from {name!r}")
                break
        else:
            outgoing = [t.label for t in spec.transitions_from(name)]
            raise StalledMachineError(
                f"state {name!r} has no enabled transition (tried {outgoing}); the loop would stall here"
            )


def _trigger(machine: Any, model: Any, name: str) -> Callable[[], bool]:
    event = machine.events[name]

    def fire() -> bool:
        return bool(event.trigger(model))

    return fire
