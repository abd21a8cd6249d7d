"""The default loop as data: HF's training flow, state by state, transition by transition.

Act-on-flags after a step or an epoch end is a chain of optional states: log, then evaluate,
then save, each followed by the same "resume" transitions: back to the
next window mid-epoch, to the epoch end when the epoch is over or a stop was requested, and at an
epoch end on to the next epoch or to done.
"""

from __future__ import annotations

from statetrain.engine.machine import Guard, MachineSpec, Transition
from statetrain.states import (
    AccumulateState,
    DoneState,
    EpochEndState,
    EpochState,
    EvaluateState,
    InitState,
    LogState,
    OptimizeState,
    PreemptState,
    SaveState,
    StepState,
)

# The guards run several times a step: they read plain attributes (``run.trainer.control``, not the
# ``run.control`` property; the fact properties of ``Run`` spelled out) so a test costs no call.
WINDOW_EMPTY = Guard("window empty", lambda run: not run.window)
WINDOW_COMPLETE = Guard("window complete", lambda run: run.window_complete)
WINDOW_HAS_MORE = Guard("window has more", lambda run: run.window_pos < len(run.window))
STOP_REQUESTED = Guard("stop requested", lambda run: run.stop_requested)
EPOCH_OVER = Guard(
    "stop requested or epoch exhausted or max_steps reached",
    lambda run: (
        run.trainer.control.should_epoch_stop
        or run.trainer.control.should_training_stop
        or run.update_step >= run.plan.num_update_steps_per_epoch  # run.epoch_exhausted
        or run.state.global_step >= run.plan.max_steps  # run.budget_spent
    ),
)
AT_EPOCH_END = Guard("at epoch end", lambda run: run.engine.epoch_ended)
EPOCHS_REMAIN = Guard("epochs remain", lambda run: run.epochs_remaining)
NOT_TRAINING_STOP = Guard("not should_training_stop", lambda run: not run.trainer.control.should_training_stop)
SHOULD_EVALUATE = Guard("should_evaluate", lambda run: run.trainer.control.should_evaluate)
EVAL_ON_START = Guard("eval_on_start", lambda run: bool(run.args.eval_on_start))
AT_START = Guard("at start", lambda run: run.starting)
SHOULD_SAVE = Guard("should_save", lambda run: run.trainer.control.should_save)
PREEMPTED = Guard("signal received", lambda run: run.preemption.requested)
BUDGET_SPENT = Guard("max_steps reached", lambda run: run.budget_spent)
SHOULD_LOG = Guard(
    "should_log and step moved",
    lambda run: run.trainer.control.should_log and run.state.global_step > run.engine.globalstep_last_logged,
)


def resume_transitions(source: str) -> list[Transition]:
    """Where the loop goes once the flag-driven work after a step or an epoch end is finished."""
    return [
        Transition(source, "preempt", "preempt", (PREEMPTED,)),
        Transition(source, "next_epoch", "epoch", (AT_EPOCH_END, EPOCHS_REMAIN, NOT_TRAINING_STOP)),
        Transition(source, "finish", "done", (AT_EPOCH_END,)),
        Transition(source, "end_epoch", "epoch_end", (EPOCH_OVER,)),
        Transition(source, "next_window", "step"),
    ]


def start_transitions(source: str) -> list[Transition]:
    """Before the first epoch (an evaluation on start, or work a custom state inserted there), go on
    to the first epoch, or to done when there is none."""
    return [
        Transition(source, "start", "epoch", (AT_START, EPOCHS_REMAIN)),
        Transition(source, "skip_training", "done", (AT_START,)),
    ]


def default_transitions() -> list[Transition]:
    """The HF flow; order within a source is priority order."""
    return [
        Transition("init", "finish", "done", (BUDGET_SPENT,)),
        Transition("init", "evaluate", "evaluate", (EVAL_ON_START,)),
        Transition("init", "start", "epoch", (EPOCHS_REMAIN,)),
        Transition("init", "no_epochs", "done"),
        Transition("epoch", "next_window", "step"),
        Transition("step", "end_epoch", "epoch_end", (WINDOW_EMPTY,)),
        Transition("step", "next_batch", "accumulate"),
        Transition("accumulate", "update", "optimize", (WINDOW_COMPLETE,)),
        Transition("accumulate", "end_epoch", "epoch_end", (STOP_REQUESTED,)),
        Transition("accumulate", "next_batch", "accumulate", (WINDOW_HAS_MORE,)),
        Transition("accumulate", "next_window", "step"),
        Transition("optimize", "log", "log", (SHOULD_LOG,)),
        Transition("optimize", "evaluate", "evaluate", (SHOULD_EVALUATE,)),
        Transition("optimize", "save", "save", (SHOULD_SAVE,)),
        Transition("optimize", "preempt", "preempt", (PREEMPTED,)),
        Transition("optimize", "end_epoch", "epoch_end", (EPOCH_OVER,)),
        Transition("optimize", "next_window", "step"),
        Transition("log", "evaluate", "evaluate", (SHOULD_EVALUATE,)),
        Transition("log", "save", "save", (SHOULD_SAVE,)),
        *resume_transitions("log"),
        *start_transitions("evaluate"),
        Transition("evaluate", "save", "save", (SHOULD_SAVE,)),
        *resume_transitions("evaluate"),
        *start_transitions("save"),
        *resume_transitions("save"),
        Transition("epoch_end", "log", "log", (SHOULD_LOG,)),
        Transition("epoch_end", "evaluate", "evaluate", (SHOULD_EVALUATE,)),
        Transition("epoch_end", "save", "save", (SHOULD_SAVE,)),
        Transition("epoch_end", "preempt", "preempt", (PREEMPTED,)),
        Transition("epoch_end", "next_epoch", "epoch", (EPOCHS_REMAIN, NOT_TRAINING_STOP)),
        Transition("epoch_end", "finish", "done"),
        Transition("preempt", "finish", "done"),
    ]


def default_machine() -> MachineSpec:
    """The preset the Trainer assembles when no machine is given."""
    states = [
        InitState(),
        EpochState(),
        StepState(),
        AccumulateState(),
        OptimizeState(),
        LogState(),
        EvaluateState(),
        SaveState(),
        PreemptState(),
        EpochEndState(),
        DoneState(),
    ]
    return MachineSpec(states, default_transitions(), initial="init", final="done")
