"""Built-in subscribers: the HF callback protocol, the default flow, progress display."""

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
