"""``report_to="mlflow"``: HF's MLflow callback on the bus, resumable.

Configured by HF's environment variables: ``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME``,
``MLFLOW_TAGS`` (JSON), ``MLFLOW_NESTED_RUN``, ``MLFLOW_RUN_ID``, ``MLFLOW_FLATTEN_PARAMS``,
``MLFLOW_MAX_LOG_PARAMS``; ``DISABLE_MLFLOW_INTEGRATION=TRUE`` leaves it out of ``"all"``. The run is
named ``run_name``; its params are ``args.to_dict()`` (plus an HF model's config), values longer
than MLflow accepts dropped with a warning; metrics keep HF's MLflow names (``loss``,
``eval_loss``: this callback does not add ``train/``) at ``state.global_step``.

A resumed run re-opens the MLflow run its checkpoint names and skips the (metric, step) pairs
MLflow already holds: the interrupted run's steps after the checkpoint are not logged twice
(statetrain's resume reproduces their values exactly).
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

from statetrain.callbacks.reporting.names import as_scalar, model_config_dict
from statetrain.callbacks.reporting.tracker import TrackerCallback

logger = logging.getLogger(__name__)
_TRUE = {"1", "ON", "YES", "TRUE"}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "FALSE").upper() in _TRUE


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class MLflowCallback(TrackerCallback):
    """Logs params once and metrics at every log, to the active or a new MLflow run (main process only)."""

    package = "mlflow"
    run_attribute = "run_id"

    def __init__(self) -> None:
        super().__init__()
        self._auto_end_run = False
        self.run_id: str | None = None
        self._already_logged: dict[str, int] = {}
        if _env_flag("HF_MLFLOW_LOG_ARTIFACTS"):
            logger.warning("HF_MLFLOW_LOG_ARTIFACTS is set, but statetrain does not copy checkpoints to MLflow yet")

    def setup(self, args: Any, state: Any, model: Any) -> None:
        """Start (or re-open) the run and log the params; a no-op off the main process."""
        self._initialized = True
        if not state.is_world_process_zero:
            return
        mlflow = self.tracker
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if uri and not mlflow.is_tracking_uri_set():
            mlflow.set_tracking_uri(uri)
        resumed_id = self.resumed_run(state)
        nested = _env_flag("MLFLOW_NESTED_RUN")
        if resumed_id and os.environ.get("MLFLOW_RUN_ID") is None:
            active = mlflow.active_run()
            if active is None or active.info.run_id != resumed_id:
                mlflow.start_run(run_id=resumed_id, nested=nested and active is not None)
                self._auto_end_run = True
            self.run_id = resumed_id
            self._already_logged = self._logged_steps(resumed_id)
            return
        if mlflow.active_run() is None or nested or os.environ.get("MLFLOW_RUN_ID"):
            experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME")
            if experiment:
                mlflow.set_experiment(experiment)
            mlflow.start_run(run_name=args.run_name, nested=nested)
            self._auto_end_run = True
        self.run_id = mlflow.active_run().info.run_id
        self._log_params(args, model)

    def _log_params(self, args: Any, model: Any) -> None:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        params = {**model_config_dict(model), **args.to_dict()}
        if _env_flag("MLFLOW_FLATTEN_PARAMS"):
            params = _flatten(params)
        for name, value in list(params.items()):
            if len(str(value)) > MAX_PARAM_VAL_LENGTH:
                logger.warning("MLflowCallback: param %r is longer than MLflow accepts; not logged", name)
                del params[name]
        items = list(params.items())
        limit = os.environ.get("MLFLOW_MAX_LOG_PARAMS", "")
        if limit.isdigit():
            items = items[: int(limit)]
        for start in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self.tracker.log_params(dict(items[start : start + MAX_PARAMS_TAGS_PER_BATCH]), synchronous=False)
        tags = os.environ.get("MLFLOW_TAGS")
        if tags:
            self.tracker.set_tags(json.loads(tags))

    def _logged_steps(self, run_id: str) -> dict[str, int]:
        """The last step MLflow holds for each metric of the run."""
        client = self.tracker.MlflowClient()
        last: dict[str, int] = {}
        for key in client.get_run(run_id).data.metrics:
            history = client.get_metric_history(run_id, key)
            last[key] = max((m.step for m in history), default=-1)
        return last

    def log_values(self, args: Any, state: Any, logs: dict[str, Any]) -> None:
        metrics: dict[str, Any] = {}
        for key, value in logs.items():
            number = as_scalar(value)
            if number is None:
                logger.warning("MLflowCallback: %r is a %s, not a number; not logged", key, type(value).__name__)
                continue
            name = re.sub(r"[^0-9A-Za-z_\-\.\ :/]", "_", key)
            if state.global_step <= self._already_logged.get(name, -1):
                continue  # the interrupted run logged this step before the resume
            metrics[name] = number
        if metrics:
            self.tracker.log_metrics(metrics=metrics, step=state.global_step, synchronous=False)

    def on_predict(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
        """Nothing: HF's MLflow callback neither starts a run for ``predict()`` nor logs its metrics."""

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._initialized and state.is_world_process_zero and self._auto_end_run and self.tracker.active_run():
            self.tracker.end_run()
            self._auto_end_run = False
        # the next train() (another trial, another run) starts its own MLflow run
        self._initialized = False
        self._already_logged = {}
