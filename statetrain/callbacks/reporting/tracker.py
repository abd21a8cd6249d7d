"""What the run-tracker callbacks (MLflow, W&B, Trackio) share.

Each imports its package when built (a missing package is named with the line to install it), sets
its run up on the first event that needs it, reports on the main process only, and stores the name
of the run it logs to in checkpoints, so that a resumed run continues the same run in the tracker
(read back with :func:`resumed_run` whatever ``restore_callback_states_from_checkpoint`` says).
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

from statetrain.callbacks.base import ExportableState, TrainerCallback
from statetrain.callbacks.reporting.names import stored_attributes


class TrackerCallback(TrainerCallback, ExportableState):
    """A callback that logs to one run of an experiment tracker; subclasses say how to set up and log."""

    package: ClassVar[str]  # the import name, which is also the name to install
    run_attribute: ClassVar[str]  # the attribute that names the tracker's run: stored in checkpoints

    def __init__(self) -> None:
        try:
            self.tracker = importlib.import_module(self.package)
        except ImportError as exc:
            name, package = type(self).__name__, self.package
            raise ImportError(f"{name} needs the {package} package: pip install {package}") from exc
        self._initialized = False
        setattr(self, self.run_attribute, None)

    def state(self) -> dict[str, Any]:
        """The tracker's run, so a resumed run continues it."""
        return {"args": {}, "attributes": {self.run_attribute: getattr(self, self.run_attribute)}}

    def resumed_run(self, state: Any) -> Any:
        """The run a resumed training's checkpoint names (None for a fresh run)."""
        return stored_attributes(state, self).get(self.run_attribute) if state.global_step > 0 else None

    def setup(self, args: Any, state: Any, model: Any) -> None:
        """Start (or re-attach to) the tracker's run; a no-op off the main process."""
        raise NotImplementedError

    def log_values(self, args: Any, state: Any, logs: dict[str, Any]) -> None:
        """Send one ``on_log`` entry (called on the main process only)."""
        raise NotImplementedError

    def log_prediction(self, metrics: dict[str, Any]) -> None:
        """Send ``predict()``'s metrics (called on the main process only); nothing by default, as HF's MLflow."""

    def _ensure_setup(self, args: Any, state: Any, model: Any) -> None:
        if not self._initialized:
            self.setup(args, state, model)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self._ensure_setup(args, state, model)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, model: Any = None, **kwargs: Any
    ) -> None:
        self._ensure_setup(args, state, model)
        if state.is_world_process_zero and logs is not None:
            self.log_values(args, state, logs)

    def on_predict(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
        self._ensure_setup(args, state, kwargs.get("model"))
        if state.is_world_process_zero and metrics:
            self.log_prediction(metrics)
