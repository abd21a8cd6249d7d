"""The generic driver: it names no state. It runs the current state, then takes the first enabled
transition out of it, until the final state has run. The declared table alone decides the flow.

The ``transitions.Machine`` built from the declaration is the model of the loop: the state the
driver runs is always the one its model is in, read back before every state. Two ways of moving it:

* **compiled** (the default): before the first state runs, the exits of every state are read out
  of the built machine (its events' transitions, their conditions and destination states, in the
  declared priority order) and compiled into one loop (``compiled_loop``). Per edge it evaluates
  those conditions and moves the model as ``Machine.set_state`` does: the same edge ``transitions``
  would take, without its per-trigger event dispatch (about 6 µs a trigger, three triggers a step).
* **full triggers** (``compiled=False``): the driver picks the edge the same way, then fires that
  trigger on the machine, which checks the conditions again and moves. Kept for comparison and for
  the test that both walk the same states."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from statetrain.engine.compiled_loop import CompiledExit, compile_loop, loop_source, shape_of
from statetrain.engine.machine import MachineSpec
from statetrain.engine.shared_machine import driven_machine
from statetrain.events.event import Event

TriggerExit = tuple[Callable[[], bool] | None, Callable[[], None]]
"""One edge for full triggers: its combined condition (``None``: unguarded) and the trigger that takes it."""


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
    run.machine_model = model
    with driven_machine(spec, run, model, initial=start) as machine:
        _drive(spec, run, machine, model, compiled)


def _drive(spec: MachineSpec, run: Any, machine: Any, model: Any, compiled: bool) -> None:
    def stalled(name: str, unknown: bool = False) -> None:
        if unknown:
            raise StalledMachineError(f"the machine's model is in state {name!r}, which the machine does not declare")
        outgoing = [t.label for t in spec.transitions_from(name)]
        raise StalledMachineError(
            f"state {name!r} has no enabled transition (tried {outgoing}); the loop would stall here"
        )

    enter, leave = Event.ON_STATE_ENTER, Event.ON_STATE_EXIT
    if compiled:
        runs = {name: state.run for name, state in spec.states.items()}
        table = read_exits(spec, machine, model)
        loop = compile_loop(list(spec.states), runs, table, spec.final, machine.model_attribute)
        loop(run, model, run.bus, enter, leave, _failed, stalled)
        return
    exits = trigger_exits(spec, machine, model)
    bus, final = run.bus, spec.final
    while True:
        name = model.state  # the machine's state is the state that runs
        if enter in bus.active:
            run.fire(enter, state_name=name)
        try:
            spec.states[name].run(run)
        except BaseException as exc:
            _failed(run, bus, name, exc)
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
            stalled(name)


def compiled_source(spec: MachineSpec) -> str:
    """The Python source of the loop the compiled driver runs for ``spec`` (for reading, debugging)."""
    model = MachineModel()
    machine = spec.build(None, model)
    return loop_source(
        shape_of(list(spec.states), read_exits(spec, machine, model)), spec.final, machine.model_attribute
    )


def _failed(run: Any, bus: Any, name: str, exc: BaseException) -> None:
    """A state raised: the persisted state names it, and ``on_exception`` hears of it."""
    run.engine.current_state = name
    if Event.ON_EXCEPTION in bus.active:
        run.fire(Event.ON_EXCEPTION, state_name=name, exception=exc)


def read_exits(spec: MachineSpec, machine: Any, model: Any) -> dict[str, list[CompiledExit]]:
    """Every state's exits in priority order, as the built ``transitions.Machine`` holds them: each
    edge's conditions (callable and required result) and its destination state's value. A condition
    given by name is what ``transitions`` would call: that attribute of ``model``."""
    exits: dict[str, list[CompiledExit]] = {}
    for name in spec.states:
        table: list[CompiledExit] = []
        for declared in spec.transitions_from(name):
            (edge,) = machine.events[declared.trigger].transitions[name]
            conditions = tuple(
                (getattr(model, c.func) if isinstance(c.func, str) else c.func, bool(c.target)) for c in edge.conditions
            )
            table.append((conditions, machine.get_state(edge.dest).value))
        exits[name] = table
    return exits


def trigger_exits(spec: MachineSpec, machine: Any, model: Any) -> dict[str, list[TriggerExit]]:
    """For full triggers: every state's exits in priority order, each a test of its conditions and
    the trigger that takes it (``transitions`` checks the conditions again when it fires)."""
    exits: dict[str, list[TriggerExit]] = {}
    read = read_exits(spec, machine, model)
    for name in spec.states:
        exits[name] = [
            (_combine(conditions), _trigger(machine, model, declared.trigger, name))
            for (conditions, _), declared in zip(read[name], spec.transitions_from(name), strict=True)
        ]
    return exits


def _combine(conditions: tuple[tuple[Callable[[], Any], bool], ...]) -> Callable[[], bool] | None:
    """One callable for an edge's conditions."""
    if not conditions:
        return None

    def enabled() -> bool:
        return all(bool(func()) == target for func, target in conditions)

    return enabled


def _trigger(machine: Any, model: Any, trigger: str, source: str) -> Callable[[], None]:
    event = machine.events[trigger]

    def move() -> None:
        if not event.trigger(model):
            raise StalledMachineError(f"the machine refused the transition it was asked for from {source!r}")

    return move
