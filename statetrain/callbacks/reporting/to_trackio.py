"""``report_to="trackio"``: HF's Trackio callback on the bus (local-first tracking).

As HF: ``trackio.init(project=args.project, name=args.run_name, space_id=args.trackio_space_id,
bucket_id=args.trackio_bucket_id, private=args.hub_private_repo, resume="allow")``, the config is
``args.to_dict()`` plus an HF model's config, values are logged with HF's names against
``train/global_step`` (run totals left out, as HF does), and the run is finished at train end.
Without a Space it stays local (``$TRACKIO_DIR``). This version does not freeze a Space after
training. A resumed run re-opens the run its checkpoint names and skips the log entries that run
already received (counted in ``output_dir/trackio-sent.json``).
"""

from __future__ import annotations

from typing import Any

from statetrain.callbacks.base import ExportableState, TrainerCallback
from statetrain.callbacks.reporting.names import SUMMARY_ONLY, model_config_dict, rewrite_logs, stored_attributes
from statetrain.callbacks.reporting.sent import SentLog


class TrackioCallback(TrainerCallback, ExportableState):
    """Logs to a Trackio run (main process only)."""

    def __init__(self) -> None:
        try:
            import trackio
        except ImportError as exc:
            raise ImportError("TrackioCallback needs the trackio package: pip install trackio") from exc
        self._trackio = trackio
        self._initialized = False
        self.run_name: str | None = None
        self._sent = SentLog("trackio")

    def state(self) -> dict[str, Any]:
        """The Trackio run's name, so a resumed run continues it."""
        return {"args": {}, "attributes": {"run_name": self.run_name}}

    def setup(self, args: Any, state: Any, model: Any) -> None:
        self._initialized = True
        if not state.is_world_process_zero:
            return
        resumed = stored_attributes(state, self).get("run_name") if state.global_step > 0 else None
        run = self._trackio.init(
            project=args.project,
            name=resumed or args.run_name,
            space_id=args.trackio_space_id,
            resume="allow",
            private=args.hub_private_repo,
            bucket_id=args.trackio_bucket_id,
        )
        self.run_name = getattr(run, "name", None)
        self._sent.open(args.output_dir, self.run_name, resumed=bool(resumed))
        self._trackio.config.update({**model_config_dict(model), **args.to_dict()}, allow_val_change=True)
        if callable(getattr(model, "num_parameters", None)):
            self._trackio.config["model/num_parameters"] = model.num_parameters()

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not self._initialized:
            self.setup(args, state, model)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, model: Any = None, **kwargs: Any
    ) -> None:
        if not self._initialized:
            self.setup(args, state, model)
        if not state.is_world_process_zero or logs is None or not self._sent.should_send(state):
            return
        history = rewrite_logs({k: v for k, v in logs.items() if k not in SUMMARY_ONLY})
        self._trackio.log({**history, "train/global_step": state.global_step})

    def on_predict(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
        if not self._initialized:
            self.setup(args, state, kwargs.get("model"))
        if state.is_world_process_zero and metrics:
            self._trackio.log(rewrite_logs(metrics))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero and self._initialized:
            try:
                self._trackio.finish()
            finally:
                self._initialized = False
