"""Event traces of a run: record them to a file, and check them against a machine.

A trace file is JSON lines, one event per line: ``{"event": "on_step_end", "state": "optimize",
"global_step": 3, "epoch": 0.75}``. State entries are the engine's ``on_state_enter`` /
``on_state_exit`` events (their ``state`` is the state entered or left). :func:`check_machine_trace`
validates such a trace against any :class:`~statetrain.engine.machine.MachineSpec`: the states
entered form a path of the machine's declared transitions from its initial state to its final
state, and each state only fires the events its class declares in ``fires`` (engine events are
allowed everywhere). For the default machine, :func:`statetrain.testing.grammar.check_trace`
additionally checks the HF event order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from statetrain.engine.machine import MachineSpec
from statetrain.events.event import ENGINE_EVENTS, Event


@dataclass(frozen=True)
class TraceEvent:
    event: str
    state: str | None
    global_step: int
    epoch: float


class TraceError(ValueError):
    """A trace does not follow the machine; the message names the position and the rule."""


class TraceWriter:
    """A bus subscriber writing every event of a run as one JSON line (flushed per line)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: TextIO | None = None
        self._state: str | None = None

    def attach(self, trainer: Any) -> TraceWriter:
        """Subscribe to every event of ``trainer`` (lowest priority, so it sees final values)."""
        for event in Event:
            trainer.on(event, self._record, priority=-(10**9))
        return self

    def _record(self, data: Any) -> None:
        event = data.event
        if event is Event.ON_STATE_ENTER:
            self._state = data.payload["state_name"]
        state_name = data.payload.get("state_name", self._state)
        entry = {
            "event": event.value,
            "state": state_name,
            "global_step": int(data.state.global_step),
            "epoch": float(data.state.epoch or 0.0),
        }
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", encoding="utf-8")
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()
        if event is Event.ON_STATE_EXIT:
            self._state = None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_trace(path: str | Path) -> list[TraceEvent]:
    """Read a JSON-lines trace; a malformed line is an error naming the file and line."""
    events: list[TraceEvent] = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            events.append(TraceEvent(raw["event"], raw.get("state"), int(raw["global_step"]), float(raw["epoch"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise TraceError(f"{path}:{number}: not a trace entry ({exc})") from exc
    return events


def check_machine_trace(trace: Sequence[TraceEvent], spec: MachineSpec) -> None:
    """The states entered follow the declared transitions; each state fires only its own events.

    One ``train()`` call is one walk from the initial to the final state; a trace may hold several.
    """
    edges = {(t.source, t.dest) for t in spec.transitions}
    engine_events = {e.value for e in ENGINE_EVENTS}
    current: str | None = None
    previous: str | None = None
    for position, entry in enumerate(trace):
        if entry.event == Event.ON_STATE_ENTER.value:
            state = entry.state or ""
            if state not in spec.states:
                raise TraceError(f"trace[{position}]: entered {state!r}, which the machine does not declare")
            if previous is None or previous == spec.final:
                if state != spec.initial:
                    raise TraceError(f"trace[{position}]: a run must start in {spec.initial!r}, not {state!r}")
            elif (previous, state) not in edges:
                raise TraceError(
                    f"trace[{position}]: {previous!r} -> {state!r} is not a declared transition of the machine"
                )
            current = state
        elif entry.event == Event.ON_STATE_EXIT.value:
            if entry.state != current:
                raise TraceError(f"trace[{position}]: left {entry.state!r} while in {current!r}")
            previous, current = current, None
        elif entry.event not in engine_events and current is not None:
            allowed = {e.value for e in spec.states[current].fires}
            if entry.event not in allowed:
                raise TraceError(
                    f"trace[{position}]: {entry.event} fired in state {current!r}, which declares only "
                    f"{sorted(allowed)}"
                )
    if previous not in (None, spec.final) or current is not None:
        raise TraceError(f"the trace ends in {current or previous!r}, not in the final state {spec.final!r}")


def hf_trace(trace: Iterable[TraceEvent]) -> list[tuple[str, int, float]]:
    """The HF events of a trace, in the form :func:`statetrain.testing.grammar.check_trace` takes."""
    hf_names = {e.value for e in Event if e.is_hf_event}
    return [(e.event, e.global_step, e.epoch) for e in trace if e.event in hf_names]
