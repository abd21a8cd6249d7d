"""The machine as data: validation errors name the offender; Mermaid holds every part; the driver."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from statetrain.engine.default_machine import default_machine
from statetrain.engine.driver import StalledMachineError, drive
from statetrain.engine.machine import Guard, MachineDefinitionError, MachineSpec, Transition, flag
from statetrain.events import EventBus
from statetrain.states.base import State


class Named(State):
    def __init__(self, name: str, log: list[str] | None = None) -> None:
        self.name = name  # type: ignore[misc]
        self.log = log

    def run(self, run: Any) -> None:
        if self.log is not None:
            self.log.append(self.name)
            run.counter += 1


def spec(
    transitions: list[Transition], names: tuple[str, ...] = ("init", "a", "done"), log: list[str] | None = None
) -> MachineSpec:
    return MachineSpec([Named(n, log) for n in names], transitions)


def test_valid_graph_passes() -> None:
    spec([Transition("init", "go", "a"), Transition("a", "end", "done")]).validate()
    default_machine().validate()


def test_unknown_state_is_named() -> None:
    with pytest.raises(MachineDefinitionError, match="unknown state 'b'"):
        spec([Transition("init", "go", "b"), Transition("a", "end", "done")]).validate()


def test_unreachable_state_is_named() -> None:
    s = spec([Transition("init", "go", "done"), Transition("a", "end", "done")])
    with pytest.raises(MachineDefinitionError, match=r"\['a'\] cannot be reached"):
        s.validate()


def test_state_without_path_to_done_is_named() -> None:
    s = spec(
        [
            Transition("init", "x", "done", (flag("should_log"),)),
            Transition("init", "go", "a"),
            Transition("a", "loop", "a"),
        ]
    )
    with pytest.raises(MachineDefinitionError, match=r"\['a'\] have no path to 'done'"):
        s.validate()


def test_same_trigger_twice_from_one_state_is_ambiguous() -> None:
    g = Guard("g", lambda r: True)
    s = spec([Transition("init", "go", "a", (g,)), Transition("init", "go", "done"), Transition("a", "end", "done")])
    with pytest.raises(MachineDefinitionError, match="ambiguous trigger 'go' from state 'init'"):
        s.validate()


def test_same_guards_twice_from_one_state_is_ambiguous() -> None:
    g = flag("should_save")
    s = spec(
        [
            Transition("init", "one", "a", (g,)),
            Transition("init", "two", "done", (g,)),
            Transition("init", "three", "a"),
            Transition("a", "end", "done"),
        ]
    )
    with pytest.raises(MachineDefinitionError, match="ambiguous guards from state 'init'"):
        s.validate()


def test_unguarded_transition_shadowing_later_ones_is_rejected() -> None:
    s = spec(
        [
            Transition("init", "go", "a"),
            Transition("init", "skip", "done", (flag("should_log"),)),
            Transition("a", "end", "done"),
        ]
    )
    with pytest.raises(MachineDefinitionError, match="has no guard, so the later transition 'skip"):
        s.validate()


def test_duplicate_state_and_final_with_exit_are_rejected() -> None:
    with pytest.raises(MachineDefinitionError, match="declared twice"):
        MachineSpec([Named("init"), Named("init")], [])
    s = spec([Transition("init", "go", "done"), Transition("done", "again", "a"), Transition("a", "end", "done")])
    with pytest.raises(MachineDefinitionError, match="final state 'done'"):
        s.validate()


def test_mermaid_holds_every_state_and_transition() -> None:
    machine = default_machine()
    text = machine.to_mermaid()
    assert text.startswith("stateDiagram-v2")
    for name in machine.states:
        assert name in text
    for t in machine.transitions:
        assert f"{t.source} --> {t.dest}: {t.label}" in text
    assert "[*] --> init" in text and "done --> [*]" in text


def test_graph_machine_rendering_matches_the_declaration() -> None:
    machine = default_machine()
    text = machine.to_graph_machine_mermaid()
    for name in machine.states:
        assert name in text
    for t in machine.transitions:
        assert t.trigger in text


def _run_context() -> SimpleNamespace:
    return SimpleNamespace(counter=0, engine=SimpleNamespace(current_state=""), bus=EventBus(), control=None)


def test_driver_follows_first_enabled_transition_in_order() -> None:
    log: list[str] = []
    many = Guard("counter < 3", lambda r: r.counter < 3)
    s = spec(
        [Transition("init", "go", "a"), Transition("a", "again", "a", (many,)), Transition("a", "end", "done")], log=log
    )
    s.validate()
    run = _run_context()
    drive(s, run)
    assert log == ["init", "a", "a", "done"]


def test_driver_reports_a_stalled_state_by_name() -> None:
    never = Guard("never", lambda r: False)
    s = spec([Transition("init", "go", "a"), Transition("a", "end", "done", (never,))], log=[])
    with pytest.raises(StalledMachineError, match="state 'a' has no enabled transition"):
        drive(s, _run_context())


def test_without_transition_removes_exactly_one_edge() -> None:
    machine = default_machine()
    smaller = machine.without_transition("optimize", "log")
    assert len(smaller.transitions) == len(machine.transitions) - 1
    with pytest.raises(MachineDefinitionError):
        machine.without_transition("optimize", "nope")


def test_builder_adds_a_state_with_priority_and_removes_states() -> None:
    from statetrain.engine.default_machine import default_machine as preset

    extra = Named("warmup_probe")
    spec = preset().with_state(
        extra,
        [
            Transition("init", "probe", "warmup_probe", (Guard("probe wanted", lambda r: True),)),
            Transition("warmup_probe", "go", "epoch"),
        ],
        before="init",
    )
    spec.validate()
    assert spec.transitions_from("init")[0].dest == "warmup_probe"
    with pytest.raises(MachineDefinitionError, match="already exists"):
        spec.with_state(Named("warmup_probe"))
    smaller = preset().without_state("evaluate")
    assert "evaluate" not in smaller.states
    assert all("evaluate" not in (t.source, t.dest) for t in smaller.transitions)
    smaller.validate()
    with pytest.raises(MachineDefinitionError, match="cannot insert before"):
        preset().with_transitions([Transition("done", "x", "init")], before="nowhere")


@pytest.mark.parametrize(
    ("removed", "argument", "value"),
    [("save", "save_strategy", "steps"), ("evaluate", "eval_strategy", "steps"), ("evaluate", "eval_on_start", True)],
)
def test_a_feature_without_its_state_is_refused_naming_both(
    tmp_path: Any, removed: str, argument: str, value: Any
) -> None:
    from statetrain import Trainer, TrainingArguments
    from statetrain.engine.default_machine import default_machine as preset
    from tests.helpers import TinyRegressor, regression_rows

    options = {"save_strategy": "no", argument: value}
    machine = preset().without_state(removed)
    with pytest.raises(MachineDefinitionError, match=rf"{argument} needs the '{removed}' state"):
        Trainer(
            model=TinyRegressor(),
            args=TrainingArguments(str(tmp_path), use_cpu=True, **options),
            train_dataset=regression_rows(8),
            eval_dataset=regression_rows(4),
            machine=machine,
        )
