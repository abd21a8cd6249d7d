"""Independent reference rules that a run's record is checked against.

* :class:`RunRecorder` records what the checks need from a ``train()`` call: the HF event trace
  (as :class:`~statetrain.testing.recorder.TraceRecorder` does), the states entered and left (for
  :func:`~statetrain.testing.trace.check_machine_trace`), whether a stop had been requested when
  each epoch ended, during which event each stop was requested, and every in-training evaluation's
  metrics.
* :func:`check_epoch_coverage` adds the configuration-dependent rule the grammar leaves out: an
  epoch that nobody asked to stop ends only after its last micro-batch (or at ``max_steps``).
* :func:`early_stopping_reference` is HF's early-stopping rule written again from its
  documentation, so a callback can be checked against it rather than against itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from statetrain.callbacks.early_stopping import EarlyStoppingCallback
from statetrain.testing.grammar import GrammarError, TraceEntry
from statetrain.testing.recorder import TraceRecorder
from statetrain.testing.trace import TraceEvent

__all__ = [
    "Evaluation",
    "RunRecorder",
    "check_epoch_coverage",
    "early_stopping_reference",
    "untimed",
]

_EPS = 1e-9
_TIMING_SUFFIXES = ("runtime", "per_second")


def untimed(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` without wall-clock fields (``*_runtime``, ``*_per_second``), which never repeat."""
    return {k: v for k, v in metrics.items() if not k.endswith(_TIMING_SUFFIXES)}


@dataclass(frozen=True)
class Evaluation:
    """One evaluation inside ``train()``: the step it ran at and its metrics (timing removed)."""

    global_step: int
    metrics: Mapping[str, Any]
    at_start: bool = False


@dataclass
class EpochEnd:
    """Where an ``on_epoch_end`` sits in the trace, and whether a stop was asked for before it."""

    position: int
    stop_requested: bool


@dataclass
class _Flags:
    stop: bool = False
    training_stop: bool = False
    epoch_begun: bool = False


class RunRecorder(TraceRecorder):
    """Records the HF events of ``train()`` calls only; evaluations in between are not part of a run.

    Register it after every other callback (lowest priority), so it sees the flags they set. Call
    :meth:`clear` between runs to check each run on its own.
    """

    def __init__(self) -> None:
        super().__init__()
        self.epoch_ends: list[EpochEnd] = []
        self.evaluations: list[Evaluation] = []
        self.stop_requests: list[tuple[str, int]] = []
        """``(event, global_step)`` of each event during which ``should_training_stop`` was turned on."""
        self.machine_trace: list[TraceEvent] = []
        """Every HF event plus the engine's state enter/exit, for :func:`check_machine_trace`."""
        self.in_train = False
        self._flags = _Flags()
        self._state: str | None = None

    def clear(self) -> None:
        self.trace.clear()
        self.epoch_ends.clear()
        self.evaluations.clear()
        self.stop_requests.clear()
        self.machine_trace.clear()

    def on_state_enter(self, args: Any, state: Any, control: Any, state_name: str = "", **kwargs: Any) -> None:
        self._state = state_name
        self._machine_event("on_state_enter", state)

    def on_state_exit(self, args: Any, state: Any, control: Any, state_name: str = "", **kwargs: Any) -> None:
        self._machine_event("on_state_exit", state)
        self._state = None

    def _machine_event(self, name: str, state: Any) -> None:
        epoch = float(state.epoch) if state.epoch is not None else 0.0
        self.machine_trace.append(TraceEvent(name, self._state, int(state.global_step), epoch))

    def observe(self, name: str, state: Any, control: Any, kwargs: Mapping[str, Any]) -> None:
        if name == "on_train_begin":
            self.in_train = True
            self._flags = _Flags()
        if not self.in_train:
            return
        if name == "on_epoch_end":
            self.epoch_ends.append(EpochEnd(len(self.trace), self._flags.stop))
        elif name == "on_epoch_begin":
            self._flags.epoch_begun = True
        elif name == "on_evaluate":
            metrics = untimed(kwargs.get("metrics") or {})
            at_start = not self._flags.epoch_begun
            self.evaluations.append(Evaluation(int(state.global_step), metrics, at_start))
        self.record(name, state)
        self._machine_event(name, state)
        if control.should_training_stop and not self._flags.training_stop:
            self.stop_requests.append((name, int(state.global_step)))
        self._flags.training_stop = bool(control.should_training_stop)
        # what the next on_epoch_end will be judged by: stop requests made by callbacks so far
        self._flags.stop = bool(control.should_training_stop or control.should_epoch_stop)
        if name == "on_train_end":
            self.in_train = False


def check_epoch_coverage(
    trace: Sequence[tuple[str, int, float]],
    epoch_ends: Iterable[EpochEnd],
    *,
    max_steps: int,
    has_length: bool = True,
) -> None:
    """Raise :class:`GrammarError` when an epoch ended early without a stop request.

    Unless ``should_epoch_stop`` or ``should_training_stop`` was set before its ``on_epoch_end``:

    * no epoch ends inside an accumulation window (the grammar allows that only for a stop);
    * for data with a length (``has_length``), every epoch ends at ``epoch == index + 1`` (after
      its last micro-batch) or at ``max_steps``. The grammar cannot know this (it depends on the
      data size); a loop that skips a short last window breaks it.
    """
    stop_at = {e.position: e.stop_requested for e in epoch_ends}
    index = -1
    first_in_run = True
    for position, (name, step, epoch) in enumerate(trace):
        if name == "on_train_begin":
            first_in_run = True
        elif name == "on_epoch_begin":
            index = math.floor(epoch + _EPS) if first_in_run else index + 1
            first_in_run = False
        elif name == "on_epoch_end":
            if stop_at.get(position, False):
                continue
            if position > 0 and trace[position - 1][0] in ("on_step_begin", "on_substep_end"):
                raise GrammarError(
                    f"trace[{position}] on_epoch_end at step {step}: the epoch ended inside an accumulation "
                    "window although no stop was requested; its micro-batches were never stepped (their "
                    "gradients carry into the next epoch's first update)",
                    position=position,
                    entry=TraceEntry(name, step, float(epoch)),
                )
            if step >= max_steps or not has_length:
                continue
            if abs(epoch - (index + 1)) > _EPS:
                raise GrammarError(
                    f"trace[{position}] on_epoch_end at step {step}, epoch {epoch:.6g}: epoch {index} ended "
                    f"before its last micro-batch (epoch would be {index + 1}) although no stop was "
                    f"requested and max_steps ({max_steps}) was not reached; a state skipped data",
                    position=position,
                    entry=TraceEntry(name, step, float(epoch)),
                )


def early_stopping_reference(
    values: Sequence[float],
    *,
    patience: int,
    threshold: float = 0.0,
    greater_is_better: bool = False,
    at_start: Sequence[bool] | None = None,
) -> int | None:
    """Index of the evaluation after which HF's early stopping ends training, or ``None``.

    HF's documented rule: an evaluation *improves* when there is no best value yet, or when it is
    strictly better than the best of the earlier evaluations by more than ``threshold``; otherwise
    a miss is counted, and training stops at the evaluation where the misses in a row reach
    ``patience``. The best value follows every strictly better evaluation, threshold or not
    (the Trainer tracks it, not the callback); the evaluation of ``eval_on_start`` counts for the
    misses but does not set the best value.
    """
    best: float | None = None
    misses = 0
    for i, value in enumerate(values):
        if best is None:
            improved = True
        else:
            better = value > best if greater_is_better else value < best
            improved = better and abs(value - best) > threshold
        misses = 0 if improved else misses + 1
        if misses >= patience:
            return i
        if at_start is not None and at_start[i]:
            continue
        if best is None or (value > best if greater_is_better else value < best):
            best = value
    return None


def early_stop_expected_by(
    callbacks: Sequence[Any], evaluations: Sequence[Evaluation], args: Any
) -> tuple[int | None, str] | None:
    """Where the ``EarlyStoppingCallback`` among ``callbacks`` must stop a run with these evaluations.

    ``(step, why)``, ``(None, why)`` when none runs out of patience, or ``None`` (nothing to check)
    without such a callback or a ``metric_for_best_model``.
    """
    stoppers = [cb for cb in callbacks if isinstance(cb, EarlyStoppingCallback)]
    if not stoppers or args.metric_for_best_model is None:
        return None
    key = metric_key(args)
    scored = [e for e in evaluations if key in e.metrics]
    values = [float(e.metrics[key]) for e in scored]
    found: list[tuple[int, str]] = []
    for cb in stoppers:
        rule_name = (
            f"{type(cb).__name__}(patience={cb.early_stopping_patience}, threshold={cb.early_stopping_threshold})"
        )
        index = early_stopping_reference(
            values,
            patience=cb.early_stopping_patience,
            threshold=cb.early_stopping_threshold,
            greater_is_better=bool(args.greater_is_better),
            at_start=[e.at_start for e in scored],
        )
        if index is not None:
            found.append(
                (
                    scored[index].global_step,
                    f"{rule_name} runs out of patience at evaluation #{index + 1} "
                    f"({key}={values[index]!r} at step {scored[index].global_step})",
                )
            )
    if found:
        return min(found, key=lambda item: item[0])
    names = ", ".join(f"{type(cb).__name__}(patience={cb.early_stopping_patience})" for cb in stoppers)
    return None, f"{names} never runs out of patience on these {len(values)} evaluations"


def metric_key(args: Any) -> str:
    name = args.metric_for_best_model or "loss"
    return name if name.startswith("eval_") else f"eval_{name}"
