"""Reusable states of the training loop, one module each."""

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
