"""``report_to="tensorboard"``: HF's TensorBoard callback on the bus, resumable.

Files go where HF puts them: ``$TENSORBOARD_LOGGING_DIR`` if set, else
``output_dir/runs/<Mon DD_HH-MM-SS>_<host>``; scalars are named ``train/loss``, ``eval/loss``...
at ``state.global_step``, strings go in as text, the arguments (and an HF model's config) as
text at the start. A resumed run writes into the folder its checkpoint names, with
``purge_step`` = the checkpoint's step + 1, so TensorBoard drops what the interrupted run logged
after that checkpoint and each step appears once.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from typing import Any

from statetrain.callbacks.base import ExportableState, TrainerCallback
from statetrain.callbacks.reporting.names import default_logdir, model_config_dict, rewrite_logs, stored_attributes

logger = logging.getLogger(__name__)


def _summary_writer_class() -> Any:
    """torch's SummaryWriter (needs the tensorboard package), else tensorboardX's, as HF accepts both."""
    for module in ("torch.utils.tensorboard", "tensorboardX"):
        try:
            return importlib.import_module(module).SummaryWriter
        except ImportError:
            continue
    raise ImportError("TensorBoardCallback needs the tensorboard package: pip install tensorboard")


class TensorBoardCallback(TrainerCallback, ExportableState):
    """Writes the logs as TensorBoard scalars; only the main process writes."""

    def __init__(self, tb_writer: Any = None) -> None:
        self._writer_class = _summary_writer_class()
        self.tb_writer = tb_writer
        env = os.environ.get("TENSORBOARD_LOGGING_DIR")
        self.logging_dir: str | None = os.path.expanduser(env) if env else None

    def state(self) -> dict[str, Any]:
        """The folder, so a resumed run continues the same TensorBoard run."""
        return {"args": {}, "attributes": {"logging_dir": self.logging_dir}}

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        resumed = state.global_step > 0
        stored = stored_attributes(state, self).get("logging_dir") if resumed else None
        if stored:
            self.logging_dir = stored
        elif state.is_hyper_param_search or self.logging_dir is None:
            # a trial's output_dir is its own run-<n> folder, so each trial gets its own run
            self.logging_dir = os.path.join(args.output_dir, default_logdir())
        if self.tb_writer is None:
            self.tb_writer = self._writer_class(
                log_dir=self.logging_dir, purge_step=state.global_step + 1 if resumed else None
            )
        self.tb_writer.add_text("args", args.to_json_string())
        config = model_config_dict(model)
        if config:
            self.tb_writer.add_text("model_config", json.dumps(config, indent=2, sort_keys=True, default=str))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or logs is None:
            return
        if self.tb_writer is None:
            if self.logging_dir is None:
                self.logging_dir = os.path.join(args.output_dir, default_logdir())
            self.tb_writer = self._writer_class(log_dir=self.logging_dir)
        for key, value in rewrite_logs(logs).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.tb_writer.add_scalar(key, value, state.global_step)
            elif isinstance(value, str):
                self.tb_writer.add_text(key, value, state.global_step)
            else:
                logger.warning("TensorBoardCallback: %r is a %s, not a scalar; not logged", key, type(value).__name__)
        self.tb_writer.flush()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.tb_writer is not None:
            self.tb_writer.close()
            self.tb_writer = None
