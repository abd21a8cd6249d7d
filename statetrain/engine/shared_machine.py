"""One ``transitions.Machine`` per declaration, shared by every drive of it.

Building the default machine (46 transitions with their conditions and events) costs about
0.4 ms, once per ``train()`` (and every ``Trainer`` assembles its own ``MachineSpec``). Nothing in
it depends on the run except the guards' binding, so here each guard is a condition *name*, which
``transitions`` resolves on the model it moves (its own way of naming a condition), and each drive
gives its model those names bound to its run. The machine is built once per declaration (the
initial state, the state names, each transition with its guards by identity); a drive adds its
model for the run and removes it at the end. A spec edited in place declares something else, and
gets the machine built for that."""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from transitions import Machine

if TYPE_CHECKING:
    from statetrain.engine.machine import Guard, MachineSpec


Declaration = tuple[str, tuple[str, ...], tuple[tuple[str, str, str, tuple[int, ...]], ...]]
"""What a machine is built from: the initial state, the state names, and each transition's source,
trigger, destination and guards (by identity: two guards of one label may test different things)."""


@dataclass(frozen=True)
class _Built:
    machine: Machine
    guards: dict[str, Guard]  # condition name on the model -> the guard it stands for (kept alive,
    # so the identities in the declaration stay theirs)


_BUILT: OrderedDict[Declaration, _Built] = OrderedDict()
_KEEP = 32  # declarations kept; the least recently driven goes first


def declaration(spec: MachineSpec) -> Declaration:
    transitions = tuple((t.source, t.trigger, t.dest, tuple(map(id, t.guards))) for t in spec.transitions)
    return spec.initial, tuple(spec.states), transitions


@contextmanager
def driven_machine(spec: MachineSpec, run: Any, model: Any, initial: str | None = None) -> Iterator[Machine]:
    """``spec``'s machine with ``model`` added for the block, its guards bound to ``run`` on ``model``.

    A start the spec does not declare gets a machine of its own (``transitions`` adds such an
    initial state, and the driver then names it), as does a model that cannot take attributes.
    """
    start = initial or spec.initial
    built = _built_for(spec) if start in spec.states else None
    try:
        if built is not None:
            for name, guard in built.guards.items():
                setattr(model, name, functools.partial(guard.test, run))
    except AttributeError:
        built = None
    if built is None:
        yield spec.build(run, model, initial=start)
        return
    built.machine.add_model(model, initial=start)
    try:
        yield built.machine
    finally:
        built.machine.remove_model(model)
        for name in built.guards:  # the model keeps no reference to the finished run
            delattr(model, name)


def _built_for(spec: MachineSpec) -> _Built:
    key = declaration(spec)
    built = _BUILT.get(key)
    if built is None:
        built = _BUILT[key] = _build(spec)
        if len(_BUILT) > _KEEP:
            _BUILT.popitem(last=False)
    else:
        _BUILT.move_to_end(key)
    return built


def _build(spec: MachineSpec) -> _Built:
    names: dict[int, str] = {}
    guards: dict[str, Guard] = {}
    for transition in spec.transitions:
        for guard in transition.guards:
            if id(guard) not in names:
                names[id(guard)] = name = f"_statetrain_guard_{len(names)}"
                guards[name] = guard
    machine = spec.to_machine(None, lambda g: names[id(g)])
    return _Built(machine, guards)
