"""The legal order of the Hugging Face training events, written by hand from HF's documented flow.

A trace is a sequence of ``(event_name, global_step, epoch)`` tuples, as
:class:`~statetrain.testing.recorder.TraceRecorder` records them from any HF-style trainer
(statetrain's or ``transformers.Trainer`` itself).
:func:`check_trace` accepts exactly the traces a training run may produce and raises
:class:`GrammarError` naming the trace position, the unexpected event and what was expected.

The grammar (EBNF; ``[x]`` optional, ``{x}`` zero or more)::

    trace      = [ on_init_end ] run { run }            (* one run per train() call *)
    run        = on_train_begin [ evaluation ] { epoch } summary
                                                        (* evaluation: eval_on_start;
                                                           >= 1 epoch unless resumed, see below *)
    epoch      = on_epoch_begin { window } on_epoch_end flags
    window     = on_step_begin { on_substep_end } ( update | BROKEN )
    update     = on_pre_optimizer_step on_optimizer_step on_step_end flags
    BROKEN     = (* nothing: a stop flag dropped the window after >= 1 on_substep_end;
                    the next event must be on_epoch_end *)
    flags      = [ train_log ] [ evaluation ] [ save ]  (* act-on-flags, in HF's order *)
    train_log  = on_log                                 (* after on_epoch_end: only if the next
                                                           event is not on_train_end, and never
                                                           when on_evaluate follows (LL(2)) *)
    evaluation = { on_prediction_step } on_log on_evaluate
    save       = on_save
    summary    = on_log on_train_end

Value rules checked on the way (they hold for every configuration):

* ``global_step`` grows by exactly 1 at each ``on_step_end`` and never changes otherwise; it is
  reset only by ``on_train_begin`` (a new ``train()`` call, possibly resumed).
* ``epoch`` changes only at ``on_step_end``. In the epoch with index *e* (the first epoch of a run
  has index ``floor(epoch)`` at its ``on_epoch_begin``, each later one the next integer), after *k*
  micro-batches of that epoch ``epoch == base + k/n`` with *n* micro-batches per epoch and ``base``
  the epoch value at the first ``on_epoch_begin`` of the run (``e`` for later epochs). *n* is
  ``steps_in_epoch`` when given, else inferred from the run's first ``on_step_end``. Hence
  ``epoch <= e + 1`` and no ``on_substep_end`` follows the epoch's last micro-batch.
* Windows never span epochs; every complete window holds ``gradient_accumulation_steps`` (GA)
  micro-batches except the last of an epoch, which may hold fewer; a broken window holds fewer than
  GA. GA is the given value, else the size of the complete, not-last windows, which must agree.
* A ``train_log`` needs ``global_step`` to have moved since the previous train log (or since
  ``on_train_begin``); the summary ``on_log`` always fires.
* A run with no epoch at all is legal only when it starts with ``global_step > 0`` (HF resuming an
  already finished run: ``range(epochs_trained, num_train_epochs)`` is empty).

Which steps log (``logging_steps``, ``logging_strategy``) depends on the configuration, so it is not
part of the grammar; tests compare traces with a reference computation for that.

Extending: each nonterminal is one method of :class:`_TraceParser`; value rules live in
:class:`_RunValues` (one hook per event). A new event joins :data:`GRAMMAR_EVENTS`.

States do not nest and each event fires only inside the state documented to fire it: that is
checked separately, by :func:`statetrain.testing.nesting.check_state_nesting`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "GRAMMAR_EVENTS",
    "HF_EVENT_NAMES",
    "GrammarError",
    "TraceEntry",
    "check_trace",
    "hf_events_only",
]

HF_EVENT_NAMES: tuple[str, ...] = (
    "on_init_end",
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_step_begin",
    "on_substep_end",
    "on_pre_optimizer_step",
    "on_optimizer_step",
    "on_step_end",
    "on_evaluate",
    "on_predict",
    "on_save",
    "on_log",
    "on_prediction_step",
    "on_push_begin",
)
"""The 16 Hugging Face callback events (transformers 5.24 ``TrainerCallback``)."""

GRAMMAR_EVENTS: frozenset[str] = frozenset(
    {
        "on_init_end",
        "on_train_begin",
        "on_epoch_begin",
        "on_step_begin",
        "on_substep_end",
        "on_pre_optimizer_step",
        "on_optimizer_step",
        "on_step_end",
        "on_epoch_end",
        "on_log",
        "on_prediction_step",
        "on_evaluate",
        "on_save",
        "on_train_end",
    }
)
"""The events of a ``train()`` call (predict and push happen outside training)."""

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


# --------------------------------------------------------------------------------------------
# the recursive-descent parser
# --------------------------------------------------------------------------------------------


class _TraceParser:
    """One method per nonterminal of the module docstring's grammar."""

    def __init__(
        self,
        trace: Sequence[TraceEntry],
        steps_in_epoch: int | None,
        gradient_accumulation_steps: int | None,
        first_run: tuple[int | None, int | None] = (None, None),
    ) -> None:
        self.trace = trace
        self.pos = 0
        self.steps_in_epoch = steps_in_epoch
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.first_run = first_run
        """The first run's ``(first_epoch_index, last_logged_step)``, facts only a checkpoint knows."""
        self.where: list[str] = []  # "run 1", "epoch 0", "window 3": for the messages
        self.values = _RunValues(self, steps_in_epoch, gradient_accumulation_steps)

    # --- tokens --------------------------------------------------------------------------------
    def peek(self, ahead: int = 0) -> str | None:
        index = self.pos + ahead
        return self.trace[index].name if index < len(self.trace) else None

    def take(self, *names: str, what: str = "") -> tuple[int, TraceEntry]:
        """Consume the next event, which must be one of ``names``."""
        if self.peek() not in names:
            self.fail_unexpected(names, what)
        pos, entry = self.pos, self.trace[self.pos]
        self.pos += 1
        return pos, entry

    # --- errors --------------------------------------------------------------------------------
    def _context(self) -> str:
        return f" (in {' > '.join(self.where)})" if self.where else ""

    def fail_unexpected(self, expected: Iterable[str], what: str = "") -> None:
        expected = tuple(dict.fromkeys(expected))
        wanted = " or ".join(repr(e) for e in expected) + (f" ({what})" if what else "")
        if self.pos >= len(self.trace):
            last = f"trace[{self.pos - 1}] {_show(self.trace[self.pos - 1])}" if self.trace else "nothing"
            message = f"trace ended after {last}: expected {wanted}{self._context()}"
            entry = None
        else:
            entry = self.trace[self.pos]
            unknown = "" if entry.name in GRAMMAR_EVENTS else " (not an event of the training grammar)"
            message = (
                f"trace[{self.pos}] {_show(entry)}: unexpected {entry.name!r}{unknown}; "
                f"expected {wanted}{self._context()}"
            )
        raise GrammarError(
            f"{message}\n  near: {_excerpt(self.trace, self.pos)}",
            position=self.pos,
            expected=expected,
            entry=entry,
        )

    def fail_value(self, position: int, message: str) -> None:
        entry = self.trace[position]
        raise GrammarError(
            f"trace[{position}] {_show(entry)}: {message}{self._context()}\n  near: {_excerpt(self.trace, position)}",
            position=position,
            entry=entry,
        )

    # --- productions ----------------------------------------------------------------------------
    def parse(self) -> None:
        """trace = [ on_init_end ] run { run }"""
        if self.peek() == "on_init_end":
            self.take("on_init_end")
        self.run(1)
        number = 2
        while self.pos < len(self.trace):
            self.run(number)
            number += 1

    def run(self, number: int) -> None:
        """run = on_train_begin { epoch } summary"""
        first_epoch_index, last_logged_step = self.first_run if number == 1 else (None, None)
        self.values = _RunValues(
            self,
            self.steps_in_epoch,
            self.gradient_accumulation_steps,
            first_epoch_index=first_epoch_index,
            last_logged_step=last_logged_step,
        )
        self.where = [f"run {number}"]
        pos, entry = self.take("on_train_begin", what="start of a train() call")
        self.values.begin(pos, entry)
        if self.peek() in ("on_prediction_step", "on_log") and self.starts_evaluation():
            self.evaluation()  # eval_on_start
        if self.peek() != "on_epoch_begin" and entry.global_step == 0:
            self.fail_unexpected(("on_epoch_begin",), "a fresh run trains at least one epoch")
        while self.peek() == "on_epoch_begin":
            self.epoch()
        self.where = [f"run {number}"]
        self.summary()
        self.values.finish()

    def epoch(self) -> None:
        """epoch = on_epoch_begin { window } on_epoch_end flags"""
        pos, entry = self.take("on_epoch_begin")
        self.values.epoch_begin(pos, entry)
        self.where[1:] = [f"epoch {self.values.epoch_index}"]
        window = 0
        while self.peek() == "on_step_begin":
            window += 1
            self.where[2:] = [f"window {window}"]
            self.window()
        self.where[2:] = []
        pos, entry = self.take("on_epoch_end", "on_step_begin")
        self.values.epoch_end(pos, entry)
        self.flags(after="on_epoch_end")

    def window(self) -> None:
        """window = on_step_begin { on_substep_end } ( update | BROKEN )"""
        pos, entry = self.take("on_step_begin")
        self.values.step_begin(pos, entry)
        substeps = 0
        while self.peek() == "on_substep_end":
            pos, entry = self.take("on_substep_end")
            self.values.substep_end(pos, entry)
            substeps += 1
        if self.peek() == "on_epoch_end" and substeps > 0:
            return  # BROKEN: a stop flag ended the epoch inside the window
        self.update(substeps)

    def update(self, substeps: int) -> None:
        """update = on_pre_optimizer_step on_optimizer_step on_step_end flags"""
        if substeps > 0:
            self.take(
                "on_pre_optimizer_step",
                "on_substep_end",
                "on_epoch_end",
                what="a window ends with the optimizer step, or a stop flag breaks it before on_epoch_end",
            )
        else:
            self.take("on_pre_optimizer_step", "on_substep_end")
        self.values.unchanged(self.pos - 1, self.trace[self.pos - 1])
        pos, entry = self.take("on_optimizer_step")
        self.values.unchanged(pos, entry)
        pos, entry = self.take("on_step_end")
        self.values.step_end(pos, entry)
        self.flags(after="on_step_end")

    def flags(self, after: str) -> None:
        """flags = [ train_log ] [ evaluation ] [ save ]  (HF's act-on-flags order)"""
        if self.peek() == "on_log" and self.starts_train_log(after):
            pos, entry = self.take("on_log")
            self.values.train_log(pos, entry)
        if self.peek() in ("on_prediction_step", "on_log") and self.starts_evaluation():
            self.evaluation()
        if self.peek() == "on_save":
            pos, entry = self.take("on_save")
            self.values.unchanged(pos, entry)

    def starts_evaluation(self) -> bool:
        """An evaluation is its prediction steps, or directly its metrics log followed by on_evaluate."""
        return self.peek() == "on_prediction_step" or self.peek(1) == "on_evaluate"

    def evaluation(self) -> None:
        """evaluation = { on_prediction_step } on_log on_evaluate"""
        while self.peek() == "on_prediction_step":
            pos, entry = self.take("on_prediction_step")
            self.values.unchanged(pos, entry)
        pos, entry = self.take("on_log", what="the evaluation's metrics log")
        self.values.unchanged(pos, entry)
        pos, entry = self.take("on_evaluate", what="after the evaluation's metrics log")
        self.values.unchanged(pos, entry)

    def starts_train_log(self, after: str) -> bool:
        """Whether the ``on_log`` at the cursor is a training log, not the summary or an eval log (LL(2))."""
        if self.peek(1) == "on_evaluate":
            return False
        # at the end of a truncated trace, take it as the summary: "expected on_train_end" is clearer
        return after == "on_step_end" or self.peek(1) not in ("on_train_end", None)

    def summary(self) -> None:
        """summary = on_log on_train_end"""
        pos, entry = self.take("on_log", what="the closing summary log, or on_epoch_begin for another epoch")
        self.values.unchanged(pos, entry)
        pos, entry = self.take("on_train_end", what="after the summary log")
        self.values.unchanged(pos, entry)


def check_trace(
    trace: Iterable[Any],
    *,
    steps_in_epoch: int | None = None,
    gradient_accumulation_steps: int | None = None,
    first_epoch_index: int | None = None,
    last_logged_step: int | None = None,
) -> None:
    """Raise :class:`GrammarError` unless ``trace`` is a legal HF training-event trace.

    ``trace`` holds ``(event_name, global_step, epoch)`` triples (``event_name`` may be an
    :class:`~statetrain.Event`). ``steps_in_epoch`` (micro-batches per epoch) and
    ``gradient_accumulation_steps``, when known, make the epoch and window-size rules exact
    instead of inferred from the trace itself.

    Two facts of a resumed first run that its trace cannot show: ``first_epoch_index``, the
    index of its first epoch (``epoch_index + epoch_ended`` of the checkpoint's engine state;
    the epoch value alone is ambiguous after an epoch that ended early and at an epoch's last
    step saved before its epoch end), and
    ``last_logged_step``, the step of the last training log before the checkpoint (the run may
    log at once when steps were taken after it). Both come from the checkpoint
    (``engine_state.json``: ``epoch_index``/``epoch_ended`` and ``globalstep_last_logged``).
    """
    entries = _normalize(trace)
    limits = (
        ("steps_in_epoch", steps_in_epoch),
        ("gradient_accumulation_steps", gradient_accumulation_steps),
    )
    for label, value in limits:
        if value is not None and value < 1:
            raise ValueError(f"{label} must be >= 1, got {value}")
    _TraceParser(entries, steps_in_epoch, gradient_accumulation_steps, (first_epoch_index, last_logged_step)).parse()


def hf_events_only(trace: Iterable[Any]) -> list[TraceEntry]:
    """The entries of ``trace`` that are HF callback events (drops state enter/exit and engine events)."""
    return [e for e in _normalize(trace) if e.name in HF_EVENT_NAMES]
