"""Where events may fire: every engine event inside the state documented to fire it, states never nested.

A checker for traces that also hold the engine's ``on_state_enter:<name>`` / ``on_state_exit:<name>``
entries (recorded by :class:`~statetrain.testing.oracles.RunRecorder` or a bus subscriber), against
a table of which events each state may fire (:data:`DEFAULT_STATE_EVENTS` for the default machine).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from statetrain.testing.grammar import HF_EVENT_NAMES, GrammarError, _excerpt, _normalize, _show

__all__ = ["DEFAULT_STATE_EVENTS", "OUTSIDE_STATE_EVENTS", "check_state_nesting"]

STATE_ENTER = "on_state_enter"
STATE_EXIT = "on_state_exit"
ON_EXCEPTION = "on_exception"

DEFAULT_STATE_EVENTS: Mapping[str, frozenset[str]] = {
    "init": frozenset({"on_train_begin"}),
    "epoch": frozenset({"on_epoch_begin"}),
    "step": frozenset({"on_step_begin"}),
    "accumulate": frozenset(
        {
            "on_substep_end",
            "on_before_forward",
            "on_after_forward",
            "on_after_loss",
            "on_before_backward",
            "on_after_backward",
        }
    ),
    "optimize": frozenset({"on_pre_optimizer_step", "on_optimizer_step", "on_step_end"}),
    "log": frozenset({"on_log"}),
    "evaluate": frozenset(
        {
            "on_prediction_step",
            "on_log",
            "on_evaluate",
            "on_before_forward",
            "on_after_forward",
            "on_after_loss",
        }
    ),
    "save": frozenset({"on_push_begin", "on_save"}),
    "preempt": frozenset({"on_push_begin"}),
    "epoch_end": frozenset({"on_epoch_end"}),
    "done": frozenset({"on_log", "on_train_end"}),
}
"""Which events each state of statetrain's default machine may fire (its documented contract)."""

OUTSIDE_STATE_EVENTS: frozenset[str] = frozenset({"on_init_end"})
"""Events fired outside the machine (``Trainer.__init__``)."""


def check_state_nesting(
    trace: Iterable[Any],
    *,
    state_events: Mapping[str, Iterable[str]] = DEFAULT_STATE_EVENTS,
    outside: Iterable[str] = OUTSIDE_STATE_EVENTS,
) -> None:
    """Raise :class:`GrammarError` unless enter/exit entries pair up and every event sits in its state.

    ``trace`` mixes ``(event, global_step, epoch)`` entries with ``on_state_enter:<state>`` and
    ``on_state_exit:<state>`` ones. Each enter is followed by the exit of the same state before the
    next enter (states do not nest); an ``on_exception`` inside a state ends it without an exit
    (the error propagates). Any other event must fire inside a state whose ``state_events`` entry
    lists it, or, for the ``outside`` events (``on_init_end``), outside every state.
    """
    entries = _normalize(trace)
    allowed = {name: frozenset(events) for name, events in state_events.items()}
    outside_events = frozenset(outside)
    known_events = outside_events.union(*allowed.values()) | set(HF_EVENT_NAMES)
    current: str | None = None
    entered_at = -1

    def fail(pos: int, message: str) -> None:
        where = f"trace[{pos}] {_show(entries[pos])}" if pos < len(entries) else "end of trace"
        raise GrammarError(
            f"{where}: {message}\n  near: {_excerpt(entries, pos)}",
            position=pos,
            entry=entries[pos] if pos < len(entries) else None,
        )

    for pos, entry in enumerate(entries):
        kind, _, state = entry.name.partition(":")
        if kind == STATE_ENTER and state:
            if current is not None:
                fail(
                    pos,
                    f"state {state!r} entered while {current!r} (entered at trace[{entered_at}]) "
                    f"was not exited; expected '{STATE_EXIT}:{current}' first",
                )
            if state not in allowed:
                fail(
                    pos,
                    f"unknown state {state!r}; known: {sorted(allowed)} (pass state_events= to "
                    "check a machine with other states)",
                )
            current, entered_at = state, pos
        elif kind == STATE_EXIT and state:
            if current is None:
                fail(pos, f"exit of state {state!r} without a matching '{STATE_ENTER}:{state}'")
            elif current != state:
                fail(
                    pos,
                    f"exit of state {state!r} but the open state is {current!r} (entered at trace[{entered_at}])",
                )
            current = None
        elif entry.name == ON_EXCEPTION:
            if current is None:
                fail(pos, "on_exception outside every state; the engine fires it for a failing state")
            current = None
        elif entry.name not in known_events:
            fail(pos, f"unknown event {entry.name!r}")
        elif current is None:
            if entry.name not in outside_events:
                owners = sorted(s for s, evs in allowed.items() if entry.name in evs)
                fail(
                    pos,
                    f"{entry.name!r} fired outside every state; it belongs inside "
                    f"{' or '.join(repr(o) for o in owners) or 'no known state'}",
                )
        elif entry.name not in allowed[current]:
            owners = sorted(s for s, evs in allowed.items() if entry.name in evs)
            inside = f"inside {' or '.join(repr(o) for o in owners)}" if owners else "outside every state"
            fail(
                pos,
                f"{entry.name!r} fired inside state {current!r} (entered at trace[{entered_at}]), "
                f"which fires only {sorted(allowed[current])}; it belongs {inside}",
            )
    if current is not None:
        fail(len(entries), f"state {current!r} entered at trace[{entered_at}] was never exited")
