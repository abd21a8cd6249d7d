"""A ``hypothesis.stateful`` harness that drives a real statetrain Trainer and checks the loop.

:class:`LoopHarness` trains a tiny model in *segments*. Each segment is one ``train()`` call that
resumes from the checkpoint the previous one ended with, and is cut after a chosen number of
optimizer steps with a fresh checkpoint, exactly where an interrupted job would stop. Between
segments hypothesis may set a ``TrainerControl`` flag for the next step, evaluate, verify the
checkpoint, or kill the Trainer and model and resume on fresh objects. Afterwards the run must
equal, bit for bit, one uninterrupted run of the same configuration and flag schedule.

Invariants:

* **grammar**: every segment's HF event trace passes
  :func:`~statetrain.testing.grammar.check_trace` (with the run's exact epoch length and
  accumulation), every epoch nobody asked to stop covers all its micro-batches
  (:func:`~statetrain.testing.oracles.check_epoch_coverage`), and the states walk the machine's
  declared transitions (:func:`~statetrain.testing.trace.check_machine_trace`);
* **monotone counters**: each segment starts at the ``global_step`` and ``epoch`` the previous one
  ended at, and neither ever decreases;
* **resume equivalence**: at the end, parameters (``torch.equal``), ``global_step`` and every
  in-training evaluation equal those of the uninterrupted reference run;
* **early stopping**: with an ``EarlyStoppingCallback`` among the callbacks, both runs end at
  the step :func:`~statetrain.testing.oracles.early_stopping_reference` computes from the
  metrics they produced, and a stop asked for during an evaluation happens only there.

Subclass it and override hooks (``make_callbacks``, ``make_machine``, ``make_model``,
``training_arguments``, ``config_strategy``...). See ``docs/property-testing.md``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import safetensors.torch
import torch
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from torch import nn

from statetrain.callbacks.base import TrainerCallback
from statetrain.callbacks.early_stopping import EarlyStoppingCallback
from statetrain.callbacks.progress import PrinterCallback, ProgressCallback
from statetrain.engine.checkpoint_store import PREFIX, verify_checkpoint
from statetrain.engine.context import ENGINE_STATE_NAME
from statetrain.engine.data import has_length, set_seed
from statetrain.engine.default_machine import default_machine
from statetrain.engine.machine import MachineSpec
from statetrain.engine.trainer import Trainer
from statetrain.engine.training_args import TrainingArguments
from statetrain.testing.flags import CONTROL_FLAGS, FlagScheduleCallback, FlagSetting
from statetrain.testing.grammar import GrammarError, check_trace
from statetrain.testing.oracles import Evaluation, RunRecorder, check_epoch_coverage, early_stopping_reference
from statetrain.testing.strategies import TrainingConfig, training_configs
from statetrain.testing.tiny import RowStream, TinyClassifier, tiny_rows
from statetrain.testing.trace import TraceError, check_machine_trace

__all__ = [
    "HarnessFailure",
    "LoopHarness",
    "ScriptedMetric",
    "SegmentCut",
    "harness_settings",
]

F = TypeVar("F", bound=Callable[..., Any])

_CUT_PRIORITY = -(10**6)  # after every user callback, so it sees the flags they set
_RECORDER_PRIORITY = -(10**7)  # after the cut, so it sees the stop the cut requests
_REFERENCE_CACHE: OrderedDict[Hashable, RunResult] = OrderedDict()
_REFERENCE_CACHE_SIZE = 256


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
class _Live:
    """One Trainer built by the harness, with what it was built with."""

    trainer: Trainer
    callbacks: list[Any]
    machine: MachineSpec
    recorder: RunRecorder
    cut: SegmentCut | None


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


def _tracked(fn: F) -> F:
    """Mark the machine unhealthy while a rule runs, so teardown skips its checks after a failure."""

    @functools.wraps(fn)
    def wrapper(self: LoopHarness, *args: Any, **kwargs: Any) -> Any:
        self._healthy = False
        result = fn(self, *args, **kwargs)
        self._healthy = True
        return result

    return wrapper  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# the harness
# --------------------------------------------------------------------------------------------


class LoopHarness(RuleBasedStateMachine):
    """Drives a real Trainer through interrupted runs; subclass it and override the ``make_*`` hooks.

    Each example draws a :class:`TrainingConfig` (``config_strategy``) and, when
    ``metric_strategy`` gives one, a metric sequence served as ``eval_score`` by
    :class:`ScriptedMetric`. The rules: ``advance(k)``, ``kill_and_resume(k)``, ``set_flag``,
    ``evaluate``, ``checkpoint``, ``finish``; teardown finishes the run when no rule did.
    """

    torch_threads: ClassVar[int | None] = 1
    """Torch CPU threads during an example: one is fastest for a tiny model (``None``: leave as is)."""
    scratch_root: ClassVar[str | None] = None
    """Where each example's temporary folder goes (default: ``/dev/shm`` when writable: fsync is free)."""
    check_machine_traces: ClassVar[bool] = True
    """Also check that the states entered follow the machine's declared transitions."""
    cache_reference: ClassVar[bool] = True
    """Reuse the reference run of an earlier example with the same :meth:`reference_key` (shrinking
    replays the same configuration many times)."""

    def __init__(self) -> None:
        super().__init__()
        self.config: TrainingConfig | None = None
        self.metric_values: list[float] | None = None
        self.schedule: list[FlagSetting] = []
        self.segments: list[Segment] = []
        self.evaluations: list[Evaluation] = []
        self.stop_requests: list[tuple[str, int]] = []
        self.global_step = 0
        self.epoch = 0.0
        self.latest_checkpoint: Path | None = None
        self.finished = False
        self._live: _Live | None = None
        self._reference: RunResult | None = None
        self._final_checked = False
        self._healthy = True
        self._history: list[tuple[int, float]] = [(0, 0.0)]
        self._has_eval = False
        self._threads = torch.get_num_threads()
        if self.torch_threads is not None:
            torch.set_num_threads(self.torch_threads)
        self.root = Path(tempfile.mkdtemp(prefix="statetrain-harness-", dir=_scratch_dir(self.scratch_root)))

    # --- hooks a subclass overrides -------------------------------------------------------------
    def config_strategy(self) -> st.SearchStrategy[TrainingConfig]:
        """The configurations to draw (default: :func:`training_configs`)."""
        return training_configs()

    def metric_strategy(self) -> st.SearchStrategy[list[float]] | None:
        """Metric values to serve as ``eval_score`` (default ``None``: the real ``eval_loss`` only)."""
        return None

    def make_model(self) -> nn.Module:
        """A fresh model; called right after the global RNG is seeded with ``args.seed``."""
        assert self.config is not None
        return TinyClassifier(dropout=self.config.dropout)

    def make_train_dataset(self) -> Any:
        assert self.config is not None
        rows = tiny_rows(self.config.train_size, seed=self.config.train_size)
        return RowStream(rows) if self.config.iterable else rows

    def make_eval_dataset(self) -> Any:
        """``None`` when the configuration has no evaluation set."""
        assert self.config is not None
        return tiny_rows(self.config.eval_size, seed=1000 + self.config.eval_size) if self.config.eval_size else None

    def make_callbacks(self) -> list[Any]:
        """The callbacks under test; called for every Trainer, so return new instances each time."""
        return []

    def make_machine(self) -> MachineSpec:
        """The machine under test; called for every Trainer (default: the default machine)."""
        return default_machine()

    def training_arguments(self, output_dir: str) -> TrainingArguments:
        """The run's arguments (default: the drawn configuration's)."""
        assert self.config is not None
        return self.config.training_arguments(output_dir)

    def make_trainer(self, **kwargs: Any) -> Trainer:
        """Build the Trainer from the keyword arguments given (override for a Trainer subclass)."""
        return Trainer(**kwargs)

    def expected_early_stop(self, evaluations: Sequence[Evaluation], args: Any) -> tuple[int | None, str] | None:
        """The step at which evaluations must stop training (``None``: never), and why; ``None`` skips the check.

        The default applies :func:`early_stopping_reference` for each ``EarlyStoppingCallback``
        among the callbacks to the run's in-training evaluations (and checks nothing without one).
        The harness then requires a run to end exactly there, and a stop asked for during an
        evaluation to happen only there. Override it to model another evaluation-driven stop.
        """
        callbacks = self._live.callbacks if self._live is not None else self.make_callbacks()
        stoppers = [cb for cb in callbacks if isinstance(cb, EarlyStoppingCallback)]
        if not stoppers or args.metric_for_best_model is None:
            return None
        key = _metric_key(args)
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

    def reference_key(self) -> Hashable:
        """Everything the uninterrupted run depends on; examples with equal keys share it.

        The default: this class, the configuration, the flag schedule and the metric values. Extend
        it when a hook depends on anything else drawn per example (or set ``cache_reference = False``).
        """
        metrics = tuple(self.metric_values) if self.metric_values is not None else None
        return (type(self), self.config, tuple(self.schedule), metrics)

    # --- rules ------------------------------------------------------------------------------------
    @initialize(data=st.data())
    def setup(self, data: st.DataObject) -> None:
        """Draw the configuration (and the scripted metrics) of this example."""
        self.config = data.draw(self.config_strategy(), label="config")
        strategy = self.metric_strategy()
        if strategy is not None:
            self.metric_values = data.draw(strategy, label="metrics")
        self._has_eval = self.make_eval_dataset() is not None

    @precondition(lambda self: self.config is not None and not self.finished)
    @rule(steps=st.integers(1, 3))
    @_tracked
    def advance(self, steps: int) -> None:
        """Train ``steps`` more optimizer steps on the same Trainer, resuming from the last checkpoint."""
        self._segment("advance", steps, fresh=False)

    @precondition(lambda self: self.config is not None and not self.finished)
    @rule(steps=st.integers(1, 3))
    @_tracked
    def kill_and_resume(self, steps: int) -> None:
        """Drop the Trainer, model and callbacks; build fresh ones and resume from the last checkpoint."""
        self._segment("kill_and_resume", steps, fresh=True)

    @precondition(lambda self: self.config is not None and not self.finished)
    @rule(flag=st.sampled_from(CONTROL_FLAGS))
    @_tracked
    def set_flag(self, flag: str) -> None:
        """Set ``flag`` at the next step's ``on_step_end`` (the reference run gets the same schedule)."""
        if flag == "should_evaluate" and not self._has_eval:
            return
        self.schedule.append(FlagSetting(self.global_step + 1, flag))

    @precondition(lambda self: self._live is not None and self._has_eval and bool(self.segments))
    @rule()
    @_tracked
    def evaluate(self) -> None:
        """``trainer.evaluate()`` between segments changes no parameter (and, after a resume, nothing)."""
        assert self._live is not None
        model = self._live.trainer.model
        before = [p.detach().clone() for p in model.parameters()]
        metrics = self._live.trainer.evaluate()
        for old, new in zip(before, model.parameters(), strict=True):
            if not torch.equal(old, new):
                raise HarnessFailure(f"trainer.evaluate() at step {self.global_step} changed the parameters")
        loss = metrics.get("eval_loss")
        if loss is not None and not math.isfinite(loss):
            raise HarnessFailure(f"trainer.evaluate() at step {self.global_step} gave eval_loss={loss}")

    @precondition(lambda self: self.config is not None)
    @rule()
    @_tracked
    def checkpoint(self) -> None:
        """The checkpoint the last segment ended with verifies and holds the live counters and weights."""
        path = self.latest_checkpoint
        if path is None or self.finished or self._live is None:
            return
        try:
            verify_checkpoint(path)
        except Exception as exc:
            raise HarnessFailure(f"{path.name} does not verify: {exc}") from exc
        stored = _read_json(path / "trainer_state.json")
        if stored.get("global_step") != self.global_step:
            raise HarnessFailure(
                f"{path.name} records global_step {stored.get('global_step')}, the run is at {self.global_step}"
            )
        trainer = self._live.trainer
        if trainer.args.load_best_model_at_end:
            return  # the live model holds the best weights, not the last ones
        weights = safetensors.torch.load_file(str(path / "model.safetensors"))
        for name, tensor in trainer.model.state_dict().items():
            if name in weights and not torch.equal(weights[name], tensor.detach().cpu()):
                raise HarnessFailure(f"{path.name} holds other weights for {name!r} than the live model")

    @precondition(lambda self: self.config is not None and not self.finished)
    @rule()
    @_tracked
    def finish(self) -> None:
        """Train to the end, then compare with the uninterrupted run."""
        self._segment("finish", None, fresh=False)
        self._check_final()

    @invariant()
    def counters_never_decrease(self) -> None:
        for (s0, e0), (s1, e1) in zip(self._history, self._history[1:], strict=False):
            if s1 < s0 or e1 < e0 - 1e-12:
                raise HarnessFailure(f"counters went back: (global_step, epoch) {(s0, e0)} -> {(s1, e1)}")

    def teardown(self) -> None:
        try:
            if self._healthy and self.config is not None and not self._final_checked:
                if not self.finished:
                    self._segment("finish (teardown)", None, fresh=False)
                self._check_final()
        finally:
            self._live = None
            shutil.rmtree(self.root, ignore_errors=True)
            torch.set_num_threads(self._threads)

    # --- running ------------------------------------------------------------------------------
    @classmethod
    def run(cls, **settings_kwargs: Any) -> None:
        """Run this harness as a test now, with :func:`harness_settings` (keyword arguments passed on)."""
        run_state_machine_as_test(cls, settings=harness_settings(**settings_kwargs))

    def _build(self, output_dir: Path, schedule: list[FlagSetting], cut: SegmentCut | None) -> _Live:
        args = self.training_arguments(str(output_dir))
        _check_supported(args)
        set_seed(args.seed)
        model = self.make_model()
        callbacks = self.make_callbacks()
        machine = self.make_machine()
        metric = ScriptedMetric(self.metric_values) if self.metric_values is not None else None
        trainer = self.make_trainer(
            model=model,
            args=args,
            train_dataset=self.make_train_dataset(),
            eval_dataset=self.make_eval_dataset(),
            callbacks=[*callbacks, FlagScheduleCallback(schedule)],
            machine=machine,
            compute_metrics=metric,
        )
        if metric is not None:
            metric.trainer = trainer
        for quiet in (PrinterCallback, ProgressCallback):
            trainer.pop_callback(quiet)
        if cut is not None:
            trainer.add_callback(cut, priority=_CUT_PRIORITY)
        recorder = RunRecorder()
        trainer.add_callback(recorder, priority=_RECORDER_PRIORITY)
        return _Live(trainer, callbacks, machine, recorder, cut)

    def _segment(self, rule_name: str, steps: int | None, *, fresh: bool) -> None:
        start_step, start_epoch = self.global_step, self.epoch
        target = None if steps is None else start_step + steps
        if fresh or self._live is None:
            self._live = None  # drop the old Trainer, model and callbacks before building new ones
            self._live = self._build(self.root / "run", self.schedule, SegmentCut())
        live = self._live
        assert live.cut is not None
        live.cut.arm(target)
        live.recorder.clear()
        segment = Segment(rule_name, start_step, target)
        self.segments.append(segment)
        resume = str(self.latest_checkpoint) if self.latest_checkpoint is not None else None
        # read before training: the resumed run may write a checkpoint of the same step again
        hints = _resume_hints(Path(resume)) if resume is not None else {}
        live.trainer.train(resume_from_checkpoint=resume)
        state = live.trainer.state
        segment.end, segment.epoch = state.global_step, float(state.epoch or 0.0)
        segment.outcome = live.cut.outcome()
        segment.target = live.cut.target
        where = f"segment {len(self.segments)} ({segment.describe()})"
        self._check_trace(where, live, hints)
        self.evaluations.extend(live.recorder.evaluations)
        self.stop_requests.extend(live.recorder.stop_requests)
        begin = live.recorder.trace[0]
        if begin[1] != start_step or not math.isclose(begin[2], start_epoch, abs_tol=1e-12):
            raise HarnessFailure(
                f"{where}: resumed at (global_step, epoch) = {begin[1:]}, but the previous segment ended at "
                f"{(start_step, start_epoch)}"
            )
        self._history.append((segment.end, segment.epoch))
        _statistic(f"segment: {live.cut.phase}")
        target = live.cut.target
        if segment.outcome == "cut":
            checkpoint = self.root / "run" / f"{PREFIX}-{target}"
            if segment.end != target or not checkpoint.is_dir():
                raise HarnessFailure(f"{where}: the cut at step {target} left no {checkpoint.name}")
            self.latest_checkpoint = checkpoint
        elif segment.outcome == "ended":
            if target is not None and segment.end > target:
                raise HarnessFailure(f"{where}: ran past its cut at step {target} to step {segment.end}")
            self.finished = True
        else:
            raise HarnessFailure(
                f"{where}: the cut at step {target} did not complete (stuck {segment.outcome!r}); a state or "
                "callback cleared the save or stop the harness asked for"
            )
        self.global_step, self.epoch = segment.end, segment.epoch

    def _check_trace(self, where: str, live: _Live, hints: dict[str, int] | None = None) -> None:
        trainer = live.trainer
        plan = trainer.plan
        steps_in_epoch = getattr(plan, "steps_in_epoch", None)
        trace = live.recorder.trace
        try:
            check_trace(
                trace,
                steps_in_epoch=steps_in_epoch,
                gradient_accumulation_steps=trainer.args.gradient_accumulation_steps,
                **(hints or {}),
            )
            check_epoch_coverage(
                trace,
                live.recorder.epoch_ends,
                max_steps=trainer.state.max_steps,
                has_length=has_length(trainer.train_dataset),
            )
            if self.check_machine_traces:
                check_machine_trace(live.recorder.machine_trace, live.machine)
        except (GrammarError, TraceError) as exc:
            raise HarnessFailure(f"{where}: the event trace breaks the loop's rules:\n{exc}") from exc

    # --- the end --------------------------------------------------------------------------------
    def reference(self) -> RunResult:
        """The uninterrupted run of this configuration and flag schedule (computed once per example)."""
        if self._reference is not None:
            return self._reference
        key = self.reference_key() if self.cache_reference else None
        cached = _REFERENCE_CACHE.get(key) if key is not None else None
        if cached is not None:
            _REFERENCE_CACHE.move_to_end(key)
            self._reference = cached
            return cached
        live = self._build(self.root / "reference", list(self.schedule), None)
        live.trainer.train()
        self._check_trace("the uninterrupted reference run", live)
        self._reference = _result(live.trainer, live.recorder.evaluations, live.recorder.stop_requests)
        if key is not None:
            _REFERENCE_CACHE[key] = self._reference
            while len(_REFERENCE_CACHE) > _REFERENCE_CACHE_SIZE:
                _REFERENCE_CACHE.popitem(last=False)
        return self._reference

    def _story(self) -> str:
        flags = ", ".join(f"{s.flag}@{s.step}" for s in self.schedule) or "none"
        return "segments: " + "; ".join(s.describe() for s in self.segments) + f"; flags: {flags}"

    def _check_final(self) -> None:
        self._final_checked = True
        assert self._live is not None
        run = _result(self._live.trainer, self.evaluations, self.stop_requests)
        ref = self.reference()
        story = self._story()
        if run.global_step != ref.global_step:
            raise HarnessFailure(
                f"the interrupted run ended at step {run.global_step}, "
                f"the uninterrupted one at {ref.global_step} ({story})"
            )
        for name, expected in ref.parameters.items():
            got = run.parameters[name]
            if not torch.equal(got, expected):
                diff = (got.double() - expected.double()).abs().max().item()
                raise HarnessFailure(
                    f"parameter {name!r} differs from the uninterrupted run's (max abs diff {diff:.3g}) after "
                    f"{story}: resuming changed the training"
                )
        mine = [(e.global_step, dict(e.metrics)) for e in run.evaluations]
        theirs = [(e.global_step, dict(e.metrics)) for e in ref.evaluations]
        if mine != theirs:
            raise HarnessFailure(
                f"the in-training evaluations differ from the uninterrupted run's ({story}):\n"
                f"  interrupted:   {mine}\n  uninterrupted: {theirs}"
            )
        args = self._live.trainer.args
        for label, result in (("uninterrupted", ref), ("interrupted", run)):
            expectation = self.expected_early_stop(result.evaluations, args)
            if expectation is None:
                continue
            stop_step, why = expectation
            values = [(e.global_step, e.metrics.get(_metric_key(args))) for e in result.evaluations]
            if stop_step is not None and result.global_step != stop_step:
                raise HarnessFailure(
                    f"the {label} run ended at step {result.global_step}, but it must end at step {stop_step}: "
                    f"{why}; evaluations (step, metric): {values} ({story})"
                )
            if stop_step is None and result.evaluation_stop is not None:
                raise HarnessFailure(
                    f"the {label} run was stopped during the evaluation at step {result.evaluation_stop}, but "
                    f"{why}; evaluations (step, metric): {values} ({story})"
                )


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


def _result(trainer: Trainer, evaluations: Sequence[Evaluation], stop_requests: Sequence[tuple[str, int]]) -> RunResult:
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


def _metric_key(args: Any) -> str:
    name = args.metric_for_best_model or "loss"
    return name if name.startswith("eval_") else f"eval_{name}"


def _check_supported(args: TrainingArguments) -> None:
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
