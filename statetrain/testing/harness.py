"""A ``hypothesis.stateful`` harness that drives a real statetrain Trainer and checks the loop.

:class:`LoopHarness` trains a tiny model in *segments*. Each segment is one ``train()`` call that
resumes from the checkpoint the previous one ended with, and is cut after a chosen number of
optimizer steps with a fresh checkpoint, exactly where an interrupted job would stop. Between
segments hypothesis may set a ``TrainerControl`` flag for the next step, evaluate, verify the
checkpoint, or kill the Trainer and model and resume on fresh objects. Afterwards the run must
equal, bit for bit, one uninterrupted run of the same configuration and flag schedule.

The invariants it checks (event grammar, epoch coverage, the machine's declared transitions,
monotone counters, bit-exact resume equivalence, early stopping against an oracle) are listed in
``docs/property-testing.md``. Subclass it and override hooks (``make_callbacks``, ``make_machine``, ``make_model``,
``training_arguments``, ``config_strategy``...). See ``docs/property-testing.md``.
"""

from __future__ import annotations

import functools
import math
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import safetensors.torch
import torch
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from torch import nn

from statetrain.args.training_args import TrainingArguments
from statetrain.callbacks.progress import PrinterCallback, ProgressCallback
from statetrain.checkpoint.store import PREFIX, verify_checkpoint
from statetrain.data.batches import has_length, set_seed
from statetrain.engine.default_machine import default_machine
from statetrain.engine.machine import MachineSpec
from statetrain.testing.flags import CONTROL_FLAGS, FlagScheduleCallback, FlagSetting
from statetrain.testing.grammar import GrammarError, check_trace
from statetrain.testing.oracles import Evaluation, RunRecorder, check_epoch_coverage, early_stop_expected_by, metric_key
from statetrain.testing.segments import (
    HarnessFailure,
    RunResult,
    ScriptedMetric,
    Segment,
    SegmentCut,
    _check_supported,
    _read_json,
    _result,
    _resume_hints,
    _scratch_dir,
    _statistic,
    harness_settings,
)
from statetrain.testing.strategies import TrainingConfig, training_configs
from statetrain.testing.tiny import RowStream, TinyClassifier, tiny_rows
from statetrain.testing.trace import TraceError, check_machine_trace
from statetrain.trainer.trainer import Trainer

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


@dataclass
class _Live:
    """One Trainer built by the harness, with what it was built with."""

    trainer: Trainer
    callbacks: list[Any]
    machine: MachineSpec
    recorder: RunRecorder
    cut: SegmentCut | None


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
        return early_stop_expected_by(callbacks, evaluations, args)

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
            values = [(e.global_step, e.metrics.get(metric_key(args))) for e in result.evaluations]
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
