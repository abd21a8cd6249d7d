"""``report_to="wandb"``: HF's Weights & Biases callback on the bus.

As HF: the project is ``$WANDB_PROJECT`` (default ``"huggingface"``), the run is named
``run_name`` (a trial's run ``state.trial_name``, grouped under ``run_name`` or ``output_dir``),
the config is ``args.to_dict()`` plus an HF model's config, every value is logged against
``train/global_step`` with HF's names (``train/loss``, ``eval/loss``), and the run totals
(``train_runtime``, ``train_loss``...) go to the run summary. ``WANDB_WATCH`` is honoured;
``WANDB_LOG_MODEL`` artifacts are not uploaded by this version (a warning says so). Offline
(``WANDB_MODE=offline``) it writes the run folder under ``$WANDB_DIR``.

A resumed run re-attaches to the W&B run id its checkpoint names (``resume="allow"``) and skips
the log entries that run already received (counted in ``output_dir/wandb-sent.json``), so the
steps an interrupted run logged after its last checkpoint are not logged twice.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from statetrain.callbacks.reporting.names import SUMMARY_ONLY, model_config_dict, rewrite_logs
from statetrain.callbacks.reporting.sent import SentLog
from statetrain.callbacks.reporting.tracker import TrackerCallback

logger = logging.getLogger(__name__)


class WandbCallback(TrackerCallback):
    """Logs to a W&B run (main process only); one run per ``train()`` in a hyperparameter search."""

    package = "wandb"
    run_attribute = "run_id"

    def __init__(self) -> None:
        super().__init__()
        self.run_id: str | None = None
        self._sent = SentLog("wandb")
        if os.environ.get("WANDB_LOG_MODEL", "false").lower() not in ("false", ""):
            logger.warning("WANDB_LOG_MODEL is set, but statetrain does not upload model artifacts to W&B yet")

    def setup(self, args: Any, state: Any, model: Any) -> None:
        """Start (or re-attach to) the run and record the config; a no-op off the main process."""
        self._initialized = True
        if not state.is_world_process_zero:
            return
        wandb = self.tracker
        init_args: dict[str, Any] = {}
        if state.trial_name is not None:
            init_args.update(name=state.trial_name, group=args.run_name or args.output_dir)
        elif args.run_name is not None:
            init_args["name"] = args.run_name
        resumed_id = self.resumed_run(state)
        if resumed_id and wandb.run is not None and wandb.run.id != resumed_id:
            wandb.finish()
        if wandb.run is None:
            if resumed_id:
                init_args.update(id=resumed_id, resume="allow")
            wandb.init(project=os.environ.get("WANDB_PROJECT", "huggingface"), **init_args)
        self.run_id = wandb.run.id
        self._sent.open(args.output_dir, self.run_id, resumed=bool(resumed_id))
        config = {**model_config_dict(model), **args.to_dict()}
        wandb.config.update(config, allow_val_change=True)
        wandb.define_metric("train/global_step")
        wandb.define_metric("*", step_metric="train/global_step", step_sync=True)
        watch = os.environ.get("WANDB_WATCH", "false")
        if watch in ("all", "parameters", "gradients") and model is not None:
            wandb.watch(model, log=watch, log_freq=max(100, state.logging_steps))
        if callable(getattr(model, "num_parameters", None)):
            wandb.config["model/num_parameters"] = model.num_parameters()

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if state.is_hyper_param_search:
            # each trial is its own W&B run
            if state.is_world_process_zero:
                self.tracker.finish()
            self._initialized = False
        if not self._initialized:
            self.setup(args, state, model)
        elif state.is_world_process_zero and self.run_id is not None:
            # another train() into the open run: a fresh log history is sent whole, a resumed one from where it was
            self._sent.open(args.output_dir, self.run_id, resumed=state.global_step > 0)

    def log_values(self, args: Any, state: Any, logs: dict[str, Any]) -> None:
        if not self._sent.should_send(state):
            return
        run = self.tracker.run
        for key, value in logs.items():
            if key in SUMMARY_ONLY and run is not None:
                run.summary[key] = value
        history = rewrite_logs({k: v for k, v in logs.items() if k not in SUMMARY_ONLY})
        self.tracker.log({**history, "train/global_step": state.global_step})

    def log_prediction(self, metrics: dict[str, Any]) -> None:
        self.tracker.log(rewrite_logs(metrics))
