"""statetrain: the Hugging Face Trainer's API on an explicit, composable state machine."""

from statetrain.args.training_args import TrainingArguments
from statetrain.callbacks import (
    DefaultFlowCallback,
    EarlyStoppingCallback,
    ExportableState,
    PrinterCallback,
    ProgressCallback,
    TrainerCallback,
)
from statetrain.context.metrics import TrainOutput
from statetrain.context.state import EngineState, TrainerControl, TrainerState
from statetrain.engine.default_machine import default_machine
from statetrain.engine.machine import Guard, MachineSpec, Transition, flag
from statetrain.events import Event, EventBus, EventData, HandlerError
from statetrain.states import State
from statetrain.trainer.hp_search import BestRun
from statetrain.trainer.trainer import Trainer

__version__ = "0.1.0"

__all__ = [
    "BestRun",
    "DefaultFlowCallback",
    "EarlyStoppingCallback",
    "EngineState",
    "Event",
    "EventBus",
    "EventData",
    "ExportableState",
    "Guard",
    "HandlerError",
    "MachineSpec",
    "PrinterCallback",
    "ProgressCallback",
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
]
