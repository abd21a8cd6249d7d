"""The pieces of a harness run that are not the state machine: the cut, the records, the checks' helpers.

:class:`SegmentCut` ends a ``train()`` call after a chosen number of optimizer steps with a fresh
checkpoint; :class:`ScriptedMetric` makes evaluations return chosen values; :class:`Segment` and
:class:`RunResult` are what a failure message and the final comparison read.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis.errors import InvalidArgument

from statetrain.callbacks.base import TrainerCallback
from statetrain.context.state import ENGINE_STATE_NAME
from statetrain.testing.oracles import Evaluation

if TYPE_CHECKING:
    from statetrain.trainer.trainer import Trainer


class HarnessFailure(AssertionError):
    """An invariant of the loop does not hold; the message says which, where, and the evidence."""


def harness_settings(max_examples: int = 20, stateful_step_count: int = 6, **kwargs: Any) -> settings:
    """Settings that suit the harness: no deadline (a ``train()`` call is not a unit test), no too_slow.

    Cost is about ``max_examples * (stateful_step_count + 2)`` ``train()`` calls of a few tens of
    milliseconds each on the tiny model, plus shrinking when something fails. The ``explain``
    phase is off unless ``phases`` is given (it line-traces torch on every replay).
    """
    kwargs.setdefault("deadline", None)
    kwargs.setdefault("suppress_health_check", [HealthCheck.too_slow, HealthCheck.filter_too_much])
    # the explain phase traces every line of a failing example's replays: minutes with torch
    kwargs.setdefault("phases", [phase for phase in Phase if phase is not Phase.explain])
    return settings(max_examples=max_examples, stateful_step_count=stateful_step_count, **kwargs)


# --------------------------------------------------------------------------------------------
# pieces a segment is made of
# --------------------------------------------------------------------------------------------


class SegmentCut(TrainerCallback):
    """Ends a ``train()`` call right after step ``target`` with a checkpoint that resumes exactly there.

    The cut goes where the uninterrupted run would pass from step ``target`` to the next one:

    * mid-epoch: ask for a save at the step (``should_save``); once it is written (``on_save``),
      ask for ``should_training_stop``; at the epoch end this stop forces, clear the epoch-end
      flags (the uninterrupted run has no epoch end here);
    * at an epoch's last window: let the epoch end and its own log, evaluation and save happen,
      then save (again) and stop, so the checkpoint records the finished epoch;
    * where ``should_epoch_stop`` ends an epoch early: one step later (``target`` grows by one).
      A resumed run cannot tell from ``state.epoch`` (a fraction) that it starts the next epoch, so
      the grammar would misread it; the uninterrupted run is the same either way.

    When the loop stops on its own (early stopping, a scheduled stop), the cut does nothing:
    ``outcome`` is then ``"ended"``. Register it after every other callback.
    """

    def __init__(self) -> None:
        self.target: int | None = None
        self.phase = "idle"
        self.postponed = 0

    def arm(self, target: int | None) -> None:
        self.target = target
        self.phase = "idle" if target is None else "armed"
        self.postponed = 0

    def _postpone(self) -> None:
        assert self.target is not None
        self.target += 1
        self.postponed += 1
        self.phase = "armed"

    def outcome(self) -> str:
        """``"cut"`` (stopped at ``target`` with a checkpoint), ``"ended"`` (the run ended), or the stuck phase."""
        if self.phase in ("stopped mid-epoch", "stopped at epoch end"):
            return "cut"
        if self.phase in ("idle", "armed", "loop stopped"):
            return "ended"
        return self.phase

    def _here(self, state: Any) -> bool:
        return self.target is not None and state.global_step == self.target

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._here(state) or self.phase != "armed":
            return
        if control.should_training_stop:
            self.phase = "loop stopped"
        elif _epoch_complete(state.epoch):
            self.phase = "awaiting epoch end"
        elif control.should_epoch_stop:
            self._postpone()
        else:
            control.should_save = True
            self.phase = "awaiting save"

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._here(state):
            return
        if self.phase == "awaiting save":
            if control.should_training_stop:
                self.phase = "loop stopped"
            elif control.should_epoch_stop:
                self._postpone()  # the save above is an extra checkpoint; the cut comes a step later
            else:
                control.should_training_stop = True
                self.phase = "stopping mid-epoch"
        elif self.phase == "awaiting epoch-end save":
            if control.should_training_stop:
                self.phase = "loop stopped"
            else:
                control.should_training_stop = True
                self.phase = "stopped at epoch end"

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._here(state):
            return
        if self.phase == "stopping mid-epoch":
            control.should_log = control.should_evaluate = control.should_save = False
            self.phase = "stopped mid-epoch"
        elif self.phase == "awaiting epoch end":
            if control.should_training_stop:
                self.phase = "loop stopped"
            else:
                control.should_save = True
                self.phase = "awaiting epoch-end save"


def _epoch_complete(epoch: float | None) -> bool:
    """After an epoch's last micro-batch ``epoch`` is a whole number (``index + n/n``)."""
    return epoch is not None and epoch > 0 and float(epoch).is_integer()


class ScriptedMetric:
    """``compute_metrics`` returning ``{"score": values[step - 1]}`` (the last value once they run out).

    Keyed by ``global_step``, not by a call count, so an evaluation gives the same value in an
    interrupted and an uninterrupted run, and evaluations between segments change nothing.
    """

    def __init__(self, values: Sequence[float]) -> None:
        if not values:
            raise ValueError("ScriptedMetric needs at least one value")
        self.values = list(values)
        self.trainer: Trainer | None = None

    def value_at(self, step: int) -> float:
        return self.values[min(max(step, 1), len(self.values)) - 1]

    def __call__(self, prediction: Any) -> dict[str, float]:
        step = self.trainer.state.global_step if self.trainer is not None else 0
        return {"score": self.value_at(step)}


@dataclass
class Segment:
    """One ``train()`` call of the interrupted run, for the failure messages."""

    rule: str
    start: int
    target: int | None
    end: int = -1
    epoch: float = 0.0
    outcome: str = ""

    def describe(self) -> str:
        goal = f"cut at {self.target}" if self.target is not None else "to the end"
        return f"{self.rule}: {self.start} -> {self.end} ({goal}, {self.outcome})"


@dataclass
class RunResult:
    """What the end of a run is compared on."""

    global_step: int
    epoch: float
    max_steps: int
    parameters: dict[str, torch.Tensor]
    evaluations: list[Evaluation] = field(default_factory=list)
    evaluation_stop: int | None = None
    """The first step at which ``should_training_stop`` was turned on during an ``on_evaluate``."""


def _resume_hints(checkpoint: Path) -> dict[str, int]:
    """What a resumed segment's trace cannot show, from its checkpoint: the index of its first
    epoch and the step of the last log before the cut (see :func:`check_trace`).

    When an epoch runs out of data right after the checkpoint's step (iterable data cannot tell
    in advance), the resumed run ends that epoch first and logs it at the checkpoint's step, as
    the uninterrupted run did once; the last-logged step makes that log legal.
    """
    facts = _read_json(checkpoint / ENGINE_STATE_NAME)
    return {
        "first_epoch_index": int(facts["epoch_index"]) + int(bool(facts["epoch_ended"])),
        "last_logged_step": int(facts["globalstep_last_logged"]),
    }


def _statistic(text: str) -> None:
    """Count ``text`` in hypothesis' statistics (``--hypothesis-show-statistics``); a no-op outside a test."""
    with contextlib.suppress(InvalidArgument):
        event(text)


def _result(trainer: Any, evaluations: Sequence[Evaluation], stop_requests: Sequence[tuple[str, int]]) -> RunResult:
    state = trainer.state
    params = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    at_evaluation = [step for event_name, step in stop_requests if event_name == "on_evaluate"]
    return RunResult(
        state.global_step,
        float(state.epoch or 0.0),
        state.max_steps,
        params,
        list(evaluations),
        at_evaluation[0] if at_evaluation else None,
    )


def _check_supported(args: Any) -> None:
    """Refuse settings under which an interrupted run is not meant to equal an uninterrupted one."""
    save = str(getattr(args.save_strategy, "value", args.save_strategy))
    problems = []
    if save == "best":
        problems.append("save_strategy='best' (an evaluation may cancel the save a cut needs)")
    if args.eval_on_start:
        problems.append("eval_on_start=True (every resumed train() call evaluates at its start again)")
    if args.ignore_data_skip:
        problems.append("ignore_data_skip=True (a resumed run replays data on purpose)")
    if args.save_only_model:
        problems.append("save_only_model=True (such checkpoints cannot resume training)")
    if problems:
        raise ValueError("LoopHarness cannot cut and resume a run with " + "; ".join(problems))


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _scratch_dir(preferred: str | None) -> str | None:
    if preferred is not None:
        return preferred
    shm = Path("/dev/shm")
    if shm.is_dir():
        try:
            probe = Path(tempfile.mkdtemp(dir=shm))
        except OSError:
            return None
        probe.rmdir()
        return str(shm)
    return None
