"""One module per reusable state of the loop (init, epoch, step, accumulate, optimize, log,
evaluate, save, preempt, epoch_end, done). A state does its work on the run context and returns.

May import ``checkpoint``, ``distributed``, ``context`` and below; never the engine, the trainer
or another state (``base`` excepted): it reaches the trainer through ``run.trainer``.
"""

from statetrain.states.accumulate import AccumulateState
from statetrain.states.base import State
from statetrain.states.done import DoneState
from statetrain.states.epoch import EpochState
from statetrain.states.epoch_end import EpochEndState
from statetrain.states.evaluate import EvaluateState
from statetrain.states.init import InitState
from statetrain.states.log import LogState
from statetrain.states.optimize import OptimizeState
from statetrain.states.preempt import PreemptState
from statetrain.states.save import SaveState
from statetrain.states.step import StepState

__all__ = [
    "AccumulateState",
    "DoneState",
    "EpochEndState",
    "EpochState",
    "EvaluateState",
    "InitState",
    "LogState",
    "OptimizeState",
    "PreemptState",
    "SaveState",
    "State",
    "StepState",
]
