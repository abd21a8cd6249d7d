"""run_after / route_into: the two common splices, each a new validated spec that leaves the original alone."""

from __future__ import annotations

from typing import Any

import pytest

from statetrain import Guard, MachineSpec, State, default_machine
from statetrain.engine.machine import MachineDefinitionError


class Probe(State):
    name = "probe"

    def run(self, run: Any) -> None:
        pass


def edges(spec: MachineSpec) -> list[tuple[str, str, str, tuple[str, ...]]]:
    return [(t.source, t.trigger, t.dest, tuple(g.label for g in t.guards)) for t in spec.transitions]


def test_run_after_hands_the_exits_over_and_keeps_their_order() -> None:
    base = default_machine()
    spliced = base.run_after("evaluate", Probe())
    assert [(t.trigger, t.dest) for t in spliced.transitions_from("evaluate")] == [("run_probe", "probe")]
    assert [(t.trigger, t.dest, t.guards) for t in spliced.transitions_from("probe")] == [
        (t.trigger, t.dest, t.guards) for t in base.transitions_from("evaluate")
    ]
    untouched = [e for e in edges(base) if e[0] != "evaluate"]
    assert [e for e in edges(spliced) if e[0] not in ("evaluate", "probe")] == untouched
    assert "probe" not in base.states, "the original spec must not change"


def test_run_after_with_a_guard_keeps_the_source_exits_as_the_fallback() -> None:
    base = default_machine()
    when = Guard("probing wanted", lambda run: True)
    spliced = base.run_after("init", Probe(), when=when, trigger="go_probe")
    init_exits = spliced.transitions_from("init")
    assert (init_exits[0].trigger, init_exits[0].dest, init_exits[0].guards) == ("go_probe", "probe", (when,))
    assert [t.trigger for t in init_exits[1:]] == [t.trigger for t in base.transitions_from("init")]
    assert [t.trigger for t in spliced.transitions_from("probe")] == [t.trigger for t in base.transitions_from("init")]


def test_route_into_sends_every_way_in_through_the_new_state() -> None:
    base = default_machine()
    ways_in = [(t.source, t.trigger, t.guards) for t in base.transitions if t.dest == "epoch"]
    assert len(ways_in) > 3
    spliced = base.route_into("epoch", Probe(), trigger="begin_epoch")
    rerouted = [(t.source, t.trigger, t.guards) for t in spliced.transitions if t.dest == "probe"]
    assert rerouted == ways_in
    assert [(t.source, t.trigger) for t in spliced.transitions if t.dest == "epoch"] == [("probe", "begin_epoch")]


def test_splices_refuse_what_would_break_the_graph() -> None:
    base = default_machine()
    with pytest.raises(MachineDefinitionError, match="unknown state 'nowhere'"):
        base.run_after("nowhere", Probe())
    with pytest.raises(MachineDefinitionError, match="'done' has no exits"):
        base.run_after("done", Probe())
    with pytest.raises(MachineDefinitionError, match="already exists"):
        base.route_into("epoch", Probe()).route_into("step", Probe())
    with pytest.raises(MachineDefinitionError, match="initial state 'init'"):
        base.route_into("init", Probe())


def test_a_splice_that_makes_a_state_unreachable_is_refused() -> None:
    """The result is validated: a splice on a spec whose edit strands a state fails naming it."""
    lonely = MachineSpec(
        [Probe(), *[s for s in default_machine().states.values()]],
        [*default_machine().transitions],
    )
    with pytest.raises(MachineDefinitionError, match="cannot be reached"):
        lonely.route_into("epoch", type("Other", (Probe,), {"name": "other"})())
