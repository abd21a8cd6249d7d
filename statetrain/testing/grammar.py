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
    save       = [ on_push_begin ] on_save                (* push_to_hub: the save's push *)
    summary    = [ on_push_begin ] on_log on_train_end  (* a preemption checkpoint's push *)

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

from collections.abc import Iterable, Sequence
from typing import Any

from statetrain.testing.grammar_values import GrammarError, TraceEntry, _excerpt, _normalize, _RunValues, _show

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
        "on_push_begin",
        "on_train_end",
    }
)
"""The events of a ``train()`` call (predict happens outside training; a save may push)."""


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
        if self.peek() == "on_push_begin" and self.peek(1) == "on_save":
            pos, entry = self.take("on_push_begin")
            self.values.unchanged(pos, entry)
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
        """summary = [ on_push_begin ] on_log on_train_end"""
        if self.peek() == "on_push_begin":
            pos, entry = self.take("on_push_begin")
            self.values.unchanged(pos, entry)
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
