"""statetrain: the Hugging Face Trainer's API on an explicit, composable state machine."""

from statetrain.args.enums import IntervalStrategy, SchedulerType
from statetrain.args.seq2seq import Seq2SeqTrainingArguments
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
from statetrain.trainer.seq2seq import Seq2SeqTrainer
from statetrain.trainer.trainer import Trainer

__version__ = "0.1.0"

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
