"""The loop as data: states, guarded transitions, validation, Mermaid, and the ``transitions.Machine``.

A :class:`MachineSpec` is a set of state objects plus an ordered list of :class:`Transition`.
Transitions out of one state are tried in declared order and the first whose guards all pass is
taken (HF's flags overlap, so order carries meaning: on the last step log comes before evaluate,
evaluate before save). The spec is validated before any work, rendered as Mermaid from the same
declaration, and built into a ``transitions.Machine`` with auto-transitions off.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from transitions import Machine

if TYPE_CHECKING:
    from statetrain.states.base import State

logging.getLogger("transitions").setLevel(logging.WARNING)


class MachineDefinitionError(ValueError):
    """The declared graph is broken; the message names the offending state or transition."""


@dataclass(frozen=True)
class Guard:
    """A named test on the run context. ``~guard`` negates; ``a & b`` and ``a | b`` combine."""

    label: str
    test: Callable[[Any], bool] = field(compare=False)

    def __call__(self, run: Any) -> bool:
        return bool(self.test(run))

    def __invert__(self) -> Guard:
        test = self.test
        return Guard(f"not {self.label}", lambda run: not test(run))

    def __and__(self, other: Guard) -> Guard:
        a, b = self.test, other.test
        return Guard(f"{self.label} and {other.label}", lambda run: a(run) and b(run))

    def __or__(self, other: Guard) -> Guard:
        a, b = self.test, other.test
        return Guard(f"({self.label} or {other.label})", lambda run: a(run) or b(run))


def flag(name: str) -> Guard:
    """A guard reading one ``TrainerControl`` flag of the run."""
    return Guard(name, lambda run: getattr(run.control, name))


def guard(label: str) -> Callable[[Callable[[Any], bool]], Guard]:
    """Decorator turning ``fn(run) -> bool`` into a named :class:`Guard`."""

    def wrap(fn: Callable[[Any], bool]) -> Guard:
        return Guard(label, fn)

    return wrap


@dataclass(frozen=True)
class Transition:
    """One edge: from ``source`` on ``trigger`` to ``dest`` when every guard holds."""

    source: str
    trigger: str
    dest: str
    guards: tuple[Guard, ...] = ()

    @property
    def label(self) -> str:
        if not self.guards:
            return self.trigger
        return f"{self.trigger} [{' and '.join(g.label for g in self.guards)}]"


class MachineSpec:
    """States and ordered transitions; validated, renderable, buildable."""

    def __init__(
        self,
        states: Iterable[State],
        transitions: Sequence[Transition],
        initial: str = "init",
        final: str = "done",
    ) -> None:
        self.states: dict[str, State] = {}
        for state in states:
            if state.name in self.states:
                raise MachineDefinitionError(f"state {state.name!r} is declared twice")
            self.states[state.name] = state
        self.transitions: list[Transition] = list(transitions)
        self.initial = initial
        self.final = final

    # --- queries ------------------------------------------------------------------------------
    def transitions_from(self, source: str) -> list[Transition]:
        return [t for t in self.transitions if t.source == source]

    # --- validation ---------------------------------------------------------------------------
    def validate(self) -> None:
        """Fail with an error naming the offender on any broken part of the graph."""
        known = self.states
        for name in (self.initial, self.final):
            if name not in known:
                raise MachineDefinitionError(
                    f"unknown state {name!r} (initial/final); declared states: {sorted(known)}"
                )
        for t in self.transitions:
            for end in (t.source, t.dest):
                if end not in known:
                    raise MachineDefinitionError(
                        f"transition {t.source} --{t.trigger}--> {t.dest} names unknown state "
                        f"{end!r}; declared states: {sorted(known)}"
                    )
        if self.transitions_from(self.final):
            raise MachineDefinitionError(f"final state {self.final!r} must have no outgoing transition")
        for source in known:
            self._check_order(source)
        reachable = _closure(self.initial, {s: [t.dest for t in self.transitions_from(s)] for s in known})
        unreachable = sorted(set(known) - reachable)
        if unreachable:
            raise MachineDefinitionError(
                f"state(s) {unreachable} cannot be reached from {self.initial!r}; add a transition into them"
            )
        reverse: dict[str, list[str]] = {s: [] for s in known}
        for t in self.transitions:
            reverse[t.dest].append(t.source)
        can_finish = _closure(self.final, reverse)
        stuck = sorted(set(known) - can_finish)
        if stuck:
            raise MachineDefinitionError(
                f"state(s) {stuck} have no path to {self.final!r}; add a transition that leads there"
            )

    def _check_order(self, source: str) -> None:
        outgoing = self.transitions_from(source)
        seen_triggers: dict[str, Transition] = {}
        seen_guards: dict[tuple[str, ...], Transition] = {}
        for index, t in enumerate(outgoing):
            if t.trigger in seen_triggers:
                raise MachineDefinitionError(
                    f"ambiguous trigger {t.trigger!r} from state {source!r}: it leads to both "
                    f"{seen_triggers[t.trigger].dest!r} and {t.dest!r}; give each transition its own trigger"
                )
            seen_triggers[t.trigger] = t
            key = tuple(sorted(g.label for g in t.guards))
            if key in seen_guards:
                raise MachineDefinitionError(
                    f"ambiguous guards from state {source!r}: {seen_guards[key].label!r} and "
                    f"{t.label!r} test the same condition, so the second can never be taken"
                )
            seen_guards[key] = t
            if not t.guards and index != len(outgoing) - 1:
                later = outgoing[index + 1]
                raise MachineDefinitionError(
                    f"transition {t.label!r} from state {source!r} has no guard, so the later "
                    f"transition {later.label!r} can never be taken; move the unguarded one last"
                )

    # --- rendering ----------------------------------------------------------------------------
    def to_mermaid(self, title: str | None = None) -> str:
        """The graph as Mermaid ``stateDiagram-v2`` text, from this declaration."""
        lines = ["stateDiagram-v2"]
        if title:
            lines.insert(0, f"---\ntitle: {title}\n---")
        lines.append(f"    [*] --> {self.initial}")
        for t in self.transitions:
            lines.append(f"    {t.source} --> {t.dest}: {t.label}")
        lines.append(f"    {self.final} --> [*]")
        return "\n".join(lines) + "\n"

    def to_graph_machine_mermaid(self) -> str:
        """The same graph rendered by ``transitions``' own Mermaid engine (a separate GraphMachine)."""
        from transitions.extensions import GraphMachine

        def named(g: Guard) -> Callable[[], bool]:
            def cond() -> bool:
                return True

            cond.__name__ = g.label
            return cond

        class _Diagram:
            """A throwaway model: the diagram never touches a running machine."""

        graph = GraphMachine(
            model=_Diagram(),
            states=list(self.states),
            transitions=[
                {
                    "trigger": t.trigger,
                    "source": t.source,
                    "dest": t.dest,
                    "conditions": [named(g) for g in t.guards],
                }
                for t in self.transitions
            ],
            initial=self.initial,
            auto_transitions=False,
            graph_engine="mermaid",
            show_conditions=True,
        )
        return str(graph.get_graph().draw(None))

    # --- building -----------------------------------------------------------------------------
    def build(self, run: Any, model: Any, initial: str | None = None) -> Machine:
        """A ``transitions.Machine`` driving ``model``, with guards bound to ``run``."""
        # a C-level binding: no extra frame per check
        return self.to_machine(model, lambda g: functools.partial(g.test, run), initial)

    def to_machine(self, model: Any, condition: Callable[[Guard], Any], initial: str | None = None) -> Machine:
        """The ``transitions.Machine`` of this declaration, each guard given to it as ``condition(guard)``
        (a callable, or the name of a model attribute); ``model=None`` builds it without a model."""
        return Machine(
            model=model,
            states=list(self.states),
            transitions=[
                {
                    "trigger": t.trigger,
                    "source": t.source,
                    "dest": t.dest,
                    "conditions": [condition(g) for g in t.guards],
                }
                for t in self.transitions
            ],
            initial=initial or self.initial,
            auto_transitions=False,
            send_event=False,
        )

    # --- editing (the loop builder) -----------------------------------------------------------
    def copy(self) -> MachineSpec:
        return MachineSpec(self.states.values(), list(self.transitions), self.initial, self.final)

    def replace_state(self, state: State) -> MachineSpec:
        """A copy with the state of the same name replaced by ``state``."""
        if state.name not in self.states:
            raise MachineDefinitionError(f"cannot replace unknown state {state.name!r}")
        spec = self.copy()
        spec.states[state.name] = state
        return spec

    def with_state(
        self, state: State, transitions: Sequence[Transition] = (), before: str | None = None
    ) -> MachineSpec:
        """A copy with a new state and its transitions, inserted before the first transition out of
        ``before`` (so they take priority there), or appended."""
        if state.name in self.states:
            raise MachineDefinitionError(f"state {state.name!r} already exists; use replace_state")
        spec = self.copy()
        spec.states[state.name] = state
        return spec.with_transitions(transitions, before=before)

    def with_transitions(self, transitions: Sequence[Transition], before: str | None = None) -> MachineSpec:
        """A copy with ``transitions`` added: ahead of the transitions out of ``before``, or at the end."""
        spec = self.copy()
        if before is None:
            spec.transitions.extend(transitions)
            return spec
        indices = [i for i, t in enumerate(spec.transitions) if t.source == before]
        if not indices:
            raise MachineDefinitionError(f"no transition leaves state {before!r}; cannot insert before it")
        spec.transitions[indices[0] : indices[0]] = list(transitions)
        return spec

    def without_state(self, name: str) -> MachineSpec:
        """A copy without state ``name`` and every transition into or out of it."""
        if name not in self.states:
            raise MachineDefinitionError(f"cannot remove unknown state {name!r}")
        states = [s for n, s in self.states.items() if n != name]
        kept = [t for t in self.transitions if name not in (t.source, t.dest)]
        return MachineSpec(states, kept, self.initial, self.final)

    def without_transition(self, source: str, trigger: str) -> MachineSpec:
        """A copy without the transition ``source --trigger-->``."""
        remaining = [t for t in self.transitions if not (t.source == source and t.trigger == trigger)]
        if len(remaining) == len(self.transitions):
            raise MachineDefinitionError(f"no transition {trigger!r} from state {source!r}")
        return MachineSpec(self.states.values(), remaining, self.initial, self.final)

    # --- splicing: the two common edits, each returning a new validated spec ---------------------
    def run_after(
        self, source: str, state: State, *, when: Guard | None = None, trigger: str | None = None
    ) -> MachineSpec:
        """A copy where ``state`` runs right after ``source``: ``source``'s exits leave from ``state``.

        ``source`` gets one transition into ``state`` (trigger ``trigger``, default ``run_<name>``),
        so nothing else needs copying by hand. With ``when``, that transition is guarded and taken
        first; ``source`` keeps its own exits for when the guard fails, and ``state`` gets copies.
        """
        self._require(source, "run a state after")
        if not self.transitions_from(source):
            raise MachineDefinitionError(f"state {source!r} has no exits to hand over to {state.name!r}")
        spec = self.with_state(state)
        entry = Transition(source, trigger or f"run_{state.name}", state.name, (when,) if when else ())
        first = next(i for i, t in enumerate(spec.transitions) if t.source == source)
        exits = [t for t in spec.transitions if t.source == source]
        moved = [Transition(state.name, t.trigger, t.dest, t.guards) for t in exits]
        if when is None:
            spec.transitions = [t for t in spec.transitions if t.source != source]
            spec.transitions[first:first] = [entry, *moved]
        else:
            spec.transitions[first:first] = [entry]
            spec.transitions.extend(moved)
        spec.validate()
        return spec

    def route_into(self, dest: str, state: State, *, trigger: str | None = None) -> MachineSpec:
        """A copy where every transition into ``dest`` passes through ``state`` first.

        Each way into ``dest`` keeps its source, trigger and guards and now ends in ``state``;
        ``state`` continues to ``dest`` (trigger ``trigger``, default ``enter_<dest>``).
        """
        self._require(dest, "route into")
        if dest == self.initial:
            raise MachineDefinitionError(f"cannot route into the initial state {dest!r}: nothing leads into it")
        spec = self.with_state(state)
        spec.transitions = [
            Transition(t.source, t.trigger, state.name, t.guards) if t.dest == dest else t for t in spec.transitions
        ]
        spec.transitions.append(Transition(state.name, trigger or f"enter_{dest}", dest))
        spec.validate()
        return spec

    def _require(self, name: str, action: str) -> None:
        if name not in self.states:
            raise MachineDefinitionError(
                f"cannot {action} unknown state {name!r}; declared states: {sorted(self.states)}"
            )


def _closure(start: str, edges: Mapping[str, Sequence[str]]) -> set[str]:
    seen = {start}
    queue = deque([start])
    while queue:
        for nxt in edges.get(queue.popleft(), ()):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen
