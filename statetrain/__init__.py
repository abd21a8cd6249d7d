"""statetrain: the Hugging Face Trainer's API on an explicit, composable state machine."""

import importlib
from typing import Any

from statetrain.args.enums import IntervalStrategy, SchedulerType
from statetrain.args.training_args import TrainingArguments
from statetrain.callbacks import (
    DefaultFlowCallback,
    EarlyStoppingCallback,
    ExportableState,
    PrinterCallback,
    ProgressCallback,
    TrainerCallback,
)
from statetrain.checkpoint.store import get_last_checkpoint
from statetrain.context.metrics import TrainOutput
from statetrain.context.state import EngineState, TrainerControl, TrainerState
from statetrain.data.batches import set_seed
from statetrain.engine.default_machine import default_machine
from statetrain.engine.machine import Guard, MachineSpec, Transition, flag
from statetrain.events import Event, EventBus, EventData, HandlerError
from statetrain.states import State
from statetrain.trainer.eval_types import EvalPrediction
from statetrain.trainer.hp_search import BestRun
from statetrain.trainer.trainer import Trainer

__version__ = "0.1.0"

_LAZY = {
    "Seq2SeqTrainingArguments": "statetrain.args.seq2seq",
    "Seq2SeqTrainer": "statetrain.trainer.seq2seq",
}
"""Names imported on first use: most runs never build a Seq2Seq trainer, and their pydantic schema
costs import time and memory in every process that only trains."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'statetrain' has no attribute {name!r}")


__all__ = [
    "BestRun",
    "DefaultFlowCallback",
    "EarlyStoppingCallback",
    "EngineState",
    "EvalPrediction",
    "Event",
    "EventBus",
    "EventData",
    "ExportableState",
    "Guard",
    "HandlerError",
    "IntervalStrategy",
    "MachineSpec",
    "PrinterCallback",
    "ProgressCallback",
    "SchedulerType",
    "Seq2SeqTrainer",
    "Seq2SeqTrainingArguments",
    "State",
    "TrainOutput",
    "Trainer",
    "TrainerCallback",
    "TrainerControl",
    "TrainerState",
    "TrainingArguments",
    "Transition",
    "default_machine",
    "flag",
    "get_last_checkpoint",
    "set_seed",
]
