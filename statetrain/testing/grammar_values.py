"""The value rules of the event grammar and the trace entries they read.

The parser in :mod:`statetrain.testing.grammar` checks the order of events; the hooks here check
the values every event carries (global step, epoch, window sizes) against the run's geometry.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from statetrain.testing.grammar import _TraceParser


_EPS = 1e-9


class TraceEntry(NamedTuple):
    """One recorded event: its HF name and the state's ``global_step`` and ``epoch`` at that time."""

    name: str
    global_step: int
    epoch: float


class GrammarError(ValueError):
    """A trace breaks the grammar or a value rule; the message names the position and the event.

    ``position`` is the index into the trace (``len(trace)`` when the trace ended too early),
    ``expected`` the event names that would have been legal there (empty for value rules).
    """

    def __init__(
        self,
        message: str,
        position: int | None = None,
        expected: tuple[str, ...] = (),
        entry: TraceEntry | None = None,
    ) -> None:
        super().__init__(message)
        self.position = position
        self.expected = expected
        self.entry = entry


def _normalize(trace: Iterable[Any]) -> list[TraceEntry]:
    entries: list[TraceEntry] = []
    for index, raw in enumerate(trace):
        try:
            name, step, epoch = raw
        except (TypeError, ValueError):
            raise GrammarError(
                f"trace[{index}] = {raw!r} is not an (event_name, global_step, epoch) triple",
                position=index,
            ) from None
        name = getattr(name, "value", name)  # accept statetrain's Event members
        if not isinstance(name, str):
            raise GrammarError(f"trace[{index}] = {raw!r}: the event name must be a string", position=index)
        if isinstance(step, bool) or not isinstance(step, int):
            raise GrammarError(f"trace[{index}] = {raw!r}: global_step must be an int", position=index)
        if isinstance(epoch, bool) or not isinstance(epoch, (int, float)):
            raise GrammarError(f"trace[{index}] = {raw!r}: epoch must be a number", position=index)
        entries.append(TraceEntry(name, step, float(epoch)))
    return entries


def _show(entry: TraceEntry) -> str:
    return f"({entry.name!r}, step {entry.global_step}, epoch {entry.epoch:.6g})"


def _excerpt(trace: Sequence[TraceEntry], position: int, radius: int = 3) -> str:
    lo, hi = max(0, position - radius), min(len(trace), position + radius + 1)
    parts = [(f">>[{i}] {trace[i].name}<<" if i == position else f"[{i}] {trace[i].name}") for i in range(lo, hi)]
    if position >= len(trace):
        parts.append(">>end of trace<<")
    prefix = "... " if lo > 0 else ""
    suffix = " ..." if hi < len(trace) else ""
    return prefix + ", ".join(parts) + suffix


# --------------------------------------------------------------------------------------------
# value rules
# --------------------------------------------------------------------------------------------


@dataclass
class _Window:
    start: int
    epoch_number: int
    size: int = 0  # micro-batches processed: one per on_substep_end, one more at on_step_end
    complete: bool = False
    last_in_epoch: bool = False


@dataclass
class _RunValues:
    """The value rules of one run (one ``train()`` call); the parser calls one hook per event."""

    parser: _TraceParser
    steps_in_epoch: int | None
    gradient_accumulation_steps: int | None
    first_epoch_index: int | None = None
    last_logged_step: int | None = None
    step: int = 0
    epoch: float = 0.0
    last_logged: int = 0
    epoch_number: int = -1  # how many epochs of this run began, minus one
    epoch_index: int = 0
    base: float = 0.0
    micro_batches: int = 0
    n: int | None = None
    n_source: str = ""
    windows: list[_Window] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.n = self.steps_in_epoch
        self.n_source = "steps_in_epoch" if self.n is not None else ""

    def fail(self, position: int, message: str) -> None:
        self.parser.fail_value(position, message)

    # --- every event ---------------------------------------------------------------------------
    def begin(self, pos: int, entry: TraceEntry) -> None:
        if entry.global_step < 0 or entry.epoch < 0:
            self.fail(pos, "global_step and epoch must be >= 0 at on_train_begin")
        self.step, self.epoch, self.last_logged = entry.global_step, entry.epoch, entry.global_step
        if self.last_logged_step is not None:
            if self.last_logged_step > entry.global_step:
                self.fail(
                    pos, f"last_logged_step {self.last_logged_step} lies after the run's start step {entry.global_step}"
                )
            self.last_logged = self.last_logged_step

    def unchanged(self, pos: int, entry: TraceEntry) -> None:
        """Every event but on_train_begin and on_step_end leaves global_step and epoch as they were."""
        if entry.global_step != self.step:
            self.fail(
                pos,
                f"global_step changed from {self.step} to {entry.global_step} at {entry.name}; it "
                "may only change (by +1) at on_step_end",
            )
        if not math.isclose(entry.epoch, self.epoch, rel_tol=_EPS, abs_tol=_EPS):
            self.fail(
                pos,
                f"epoch changed from {self.epoch!r} to {entry.epoch!r} at {entry.name}; it may only "
                "change at on_step_end",
            )

    # --- per event -----------------------------------------------------------------------------
    def epoch_begin(self, pos: int, entry: TraceEntry) -> None:
        self.unchanged(pos, entry)
        self.epoch_number += 1
        if self.epoch_number == 0 and self.first_epoch_index is not None:
            # resumed: the checkpoint knows the epoch's index; the epoch value may be below it (an
            # epoch that ended early) or at its end (every micro-batch done, the epoch end not yet)
            first = self.first_epoch_index
            self.epoch_index = first
            if entry.epoch > first + 1 + _EPS:
                self.fail(pos, f"first_epoch_index {first} lies before epoch {entry.epoch!r}")
            self.base = float(first) if entry.epoch < first - _EPS else entry.epoch
        elif self.epoch_number == 0:
            self.epoch_index = math.floor(entry.epoch + _EPS)
            self.base = entry.epoch
        else:
            self.epoch_index += 1
            self.base = float(self.epoch_index)
        self.micro_batches = 0

    def step_begin(self, pos: int, entry: TraceEntry) -> None:
        self.unchanged(pos, entry)
        self.windows.append(_Window(pos, self.epoch_number))

    def substep_end(self, pos: int, entry: TraceEntry) -> None:
        self.unchanged(pos, entry)
        self.micro_batches += 1
        self.windows[-1].size += 1
        if self.n is not None and self.base + self.micro_batches / self.n >= self.epoch_index + 1 - _EPS:
            self.fail(
                pos,
                f"on_substep_end after micro-batch {self.micro_batches} of an epoch of {self.n} "
                f"({self.n_source}): the epoch's last micro-batch always closes its window",
            )

    def step_end(self, pos: int, entry: TraceEntry) -> None:
        if entry.global_step != self.step + 1:
            self.fail(
                pos,
                f"global_step must grow by exactly 1 at on_step_end: expected {self.step + 1}, got {entry.global_step}",
            )
        self.micro_batches += 1
        self.windows[-1].size += 1
        self.windows[-1].complete = True
        k, e = self.micro_batches, self.epoch_index
        if entry.epoch <= self.epoch + _EPS or entry.epoch <= self.base:
            self.fail(pos, f"epoch must grow at on_step_end: was {self.epoch!r}, got {entry.epoch!r}")
        if self.n is None:
            estimate = k / (entry.epoch - self.base)
            n = round(estimate)
            if n < 1 or abs(estimate - n) > 1e-6 * max(1.0, estimate):
                self.fail(
                    pos,
                    f"epoch {entry.epoch!r} after {k} micro-batch(es) of epoch {e} is not "
                    f"{self.base!r} + {k}/n for a whole number n of micro-batches per epoch",
                )
            self.n, self.n_source = n, f"inferred at trace[{pos}]"
        expected = self.base + k / self.n
        if not math.isclose(entry.epoch, expected, rel_tol=_EPS, abs_tol=_EPS):
            self.fail(
                pos,
                f"epoch must be {expected!r} (= {self.base!r} + {k}/{self.n}: {k} micro-batch(es) "
                f"of epoch {e}, {self.n} per epoch, {self.n_source}), got {entry.epoch!r}",
            )
        if entry.epoch > e + 1 + _EPS:
            self.fail(pos, f"epoch {entry.epoch!r} lies beyond the end of epoch {e} (at most {e + 1})")
        self.step, self.epoch = entry.global_step, entry.epoch

    def train_log(self, pos: int, entry: TraceEntry) -> None:
        self.unchanged(pos, entry)
        if entry.global_step <= self.last_logged:
            self.fail(
                pos,
                f"on_log after a step or an epoch end needs global_step to have moved since the "
                f"last log (step {self.last_logged}); got {entry.global_step}",
            )
        self.last_logged = entry.global_step

    def epoch_end(self, pos: int, entry: TraceEntry) -> None:
        self.unchanged(pos, entry)
        if self.windows and self.windows[-1].epoch_number == self.epoch_number:
            self.windows[-1].last_in_epoch = True

    # --- at the end of the run ------------------------------------------------------------------
    def finish(self) -> None:
        ga, source = self.gradient_accumulation_steps, "gradient_accumulation_steps"
        if ga is None:
            sizes = sorted({w.size for w in self.windows if w.complete and not w.last_in_epoch})
            if len(sizes) > 1:
                first = next(w for w in self.windows if w.complete and not w.last_in_epoch)
                odd = next(w for w in self.windows if w.complete and not w.last_in_epoch and w.size != first.size)
                self.fail(
                    odd.start,
                    f"window starting at trace[{odd.start}] holds {odd.size} micro-batch(es) but the "
                    f"one at trace[{first.start}] holds {first.size}: only the last window of an "
                    "epoch may be shorter",
                )
            if not sizes:
                return
            ga, source = sizes[0], "inferred from the full windows"
        for w in self.windows:
            if w.complete and not w.last_in_epoch and w.size != ga:
                self.fail(
                    w.start,
                    f"window starting at trace[{w.start}] holds {w.size} micro-batch(es); expected "
                    f"{ga} ({source}): only the last window of an epoch may be shorter",
                )
            if w.complete and w.size > ga:
                self.fail(
                    w.start,
                    f"window starting at trace[{w.start}] holds {w.size} micro-batch(es), more than {ga} ({source})",
                )
            if not w.complete and w.size >= ga:
                self.fail(
                    w.start,
                    f"broken window starting at trace[{w.start}] saw {w.size} micro-batch(es) "
                    f"without an optimizer step; at {ga} ({source}) it would have been complete",
                )
