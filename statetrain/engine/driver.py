"""The generic driver: it names no state. It runs the current state, then takes the first enabled
transition out of it, until the final state has run. The declared table alone decides the flow.

The ``transitions.Machine`` built from the declaration is the model of the loop: the state the
driver runs is always the one its model is in. Two ways of moving it:

* **compiled** (the default): before the first state runs, the exits of every state are read out
  of the built machine (its events' transitions, their conditions and destination states, in the
  declared priority order) into a table. Per edge the driver then evaluates those conditions and
  moves the model as ``Machine.set_state`` does: the same edge ``transitions`` would take, without
  its per-trigger event dispatch (about 6 µs a trigger, three triggers a step).
* **full triggers** (``compiled=False``): the driver picks the edge the same way, then fires that
  trigger on the machine, which checks the conditions again and moves. Kept for comparison and for
  the test that both walk the same states.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from statetrain.engine.machine import MachineSpec
from statetrain.events.event import Event

Exit = tuple[Callable[[], bool] | None, Callable[[], None]]
"""One compiled edge: its combined condition (``None``: unguarded) and the move into its destination."""


class StalledMachineError(RuntimeError):
    """No transition out of a state was enabled: the loop would stall. Names the state."""


class MachineModel:
    """The object ``transitions`` drives; it only carries the current state name."""

    state: str


def drive(spec: MachineSpec, run: Any, start: str | None = None, *, compiled: bool = True, model: Any = None) -> None:
    """Run ``spec`` on the run context from ``start`` (default: the initial state) to the final state.

    ``model`` is the object the ``transitions.Machine`` drives (a fresh :class:`MachineModel` by
    default); it is left on ``run.machine_model`` so observers can read the machine's state. The
    persisted ``engine.current_state`` is copied from it when a checkpoint is written, not per state.
    """
    model = model if model is not None else MachineModel()
    machine = spec.build(run, model, initial=start)
    run.machine_model = model
    exits = compile_exits(spec, machine, model, compiled)
    runs = {name: state.run for name, state in spec.states.items()}
    final, bus = spec.final, run.bus
    enter, leave, failed = Event.ON_STATE_ENTER, Event.ON_STATE_EXIT, Event.ON_EXCEPTION
    while True:
        name = model.state  # the machine's state is the state that runs
        if enter in bus.active:
            run.fire(enter, state_name=name)
        try:
            runs[name](run)
        except BaseException as exc:
            run.engine.current_state = name
            if failed in bus.active:
                run.fire(failed, state_name=name, exception=exc)
            raise
        if leave in bus.active:
            run.fire(leave, state_name=name)
        if name == final:
            run.engine.current_state = name
            return
        for enabled, move in exits[name]:
            if enabled is None or enabled():
                move()
                break
        else:
            outgoing = [t.label for t in spec.transitions_from(name)]
            raise StalledMachineError(
                f"state {name!r} has no enabled transition (tried {outgoing}); the loop would stall here"
            )


def compile_exits(spec: MachineSpec, machine: Any, model: Any, compiled: bool = True) -> dict[str, list[Exit]]:
    """Every state's exits in priority order, read from the built ``transitions.Machine``.

    The declaration gives the order (first enabled wins); the machine gives each edge's conditions
    and destination, so what runs is what ``transitions`` holds.
    """
    exits: dict[str, list[Exit]] = {}
    for name in spec.states:
        table: list[Exit] = []
        for declared in spec.transitions_from(name):
            (edge,) = machine.events[declared.trigger].transitions[name]
            enabled = _combine([(c.func, c.target) for c in edge.conditions])
            if compiled:
                move = _setter(machine, model, machine.get_state(edge.dest))
            else:
                move = _trigger(machine, model, declared.trigger, name)
            table.append((enabled, move))
        exits[name] = table
    return exits


def _combine(conditions: list[tuple[Callable[[], Any], bool]]) -> Callable[[], bool] | None:
    """One callable for an edge's conditions (the common single-guard case adds no wrapper)."""
    if not conditions:
        return None
    if len(conditions) == 1 and conditions[0][1]:
        return conditions[0][0]
    funcs = tuple(conditions)

    def enabled() -> bool:
        return all(bool(func()) == target for func, target in funcs)

    return enabled


def _setter(machine: Any, model: Any, state: Any) -> Callable[[], None]:
    """``machine.set_state(state, model)`` with its lookups done once: the model's state attribute
    (``transitions``' ``model_attribute``) takes the state's value."""
    attribute, value = machine.model_attribute, state.value

    def move() -> None:
        setattr(model, attribute, value)

    return move


def _trigger(machine: Any, model: Any, trigger: str, source: str) -> Callable[[], None]:
    event = machine.events[trigger]

    def move() -> None:
        if not event.trigger(model):
            raise StalledMachineError(f"the machine refused the transition it was asked for from {source!r}")

    return move
