"""``report_to="codecarbon"``: HF's CodeCarbon callback, measuring the training's energy and CO2.

As HF: the local main process of each node builds ``codecarbon.EmissionsTracker(output_dir=
args.output_dir)`` when the Trainer is built, starts it at train begin and stops it at train end;
the tracker writes ``emissions.csv`` in ``output_dir``. CodeCarbon reads its own environment
variables (``CODECARBON_*``) and config file.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from statetrain.callbacks.base import TrainerCallback


class CodeCarbonCallback(TrainerCallback):
    """Tracks emissions over ``train()`` (local main process only)."""

    def __init__(self) -> None:
        try:
            import codecarbon
        except ImportError as exc:
            raise ImportError("CodeCarbonCallback needs the codecarbon package: pip install codecarbon") from exc
        if torch.version.hip:
            raise RuntimeError("CodeCarbonCallback: codecarbon does not support AMD ROCm; leave 'codecarbon' out")
        self._codecarbon = codecarbon
        self.tracker: Any = None

    def on_init_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.tracker is None and state.is_local_process_zero:
            os.makedirs(args.output_dir, exist_ok=True)  # codecarbon refuses a folder that does not exist yet
            self.tracker = self._codecarbon.EmissionsTracker(output_dir=args.output_dir)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.tracker is not None and state.is_local_process_zero:
            self.tracker.start()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.tracker is not None and state.is_local_process_zero:
            self.tracker.stop()
