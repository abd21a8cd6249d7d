"""Built-in subscribers with HF's callback protocol: the default flow, early stopping, progress
and printing.

May import the engine and everything below it; never the trainer.
"""

from statetrain.callbacks.base import ExportableState, TrainerCallback
from statetrain.callbacks.early_stopping import EarlyStoppingCallback
from statetrain.callbacks.flow import DefaultFlowCallback
from statetrain.callbacks.progress import PrinterCallback, ProgressCallback

__all__ = [
    "DefaultFlowCallback",
    "EarlyStoppingCallback",
    "ExportableState",
    "PrinterCallback",
    "ProgressCallback",
    "TrainerCallback",
]
