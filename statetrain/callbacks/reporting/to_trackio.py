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

from statetrain.callbacks.reporting.names import SUMMARY_ONLY, model_config_dict, rewrite_logs
from statetrain.callbacks.reporting.sent import SentLog
from statetrain.callbacks.reporting.tracker import TrackerCallback


class TrackioCallback(TrackerCallback):
    """Logs to a Trackio run (main process only)."""

    package = "trackio"
    run_attribute = "run_name"

    def __init__(self) -> None:
        super().__init__()
        self.run_name: str | None = None
        self._sent = SentLog("trackio")

    def setup(self, args: Any, state: Any, model: Any) -> None:
        self._initialized = True
        if not state.is_world_process_zero:
            return
        resumed = self.resumed_run(state)
        run = self.tracker.init(
            project=args.project,
            name=resumed or args.run_name,
            space_id=args.trackio_space_id,
            resume="allow",
            private=args.hub_private_repo,
            bucket_id=args.trackio_bucket_id,
        )
        self.run_name = getattr(run, "name", None)
        self._sent.open(args.output_dir, self.run_name, resumed=bool(resumed))
        self.tracker.config.update({**model_config_dict(model), **args.to_dict()}, allow_val_change=True)
        if callable(getattr(model, "num_parameters", None)):
            self.tracker.config["model/num_parameters"] = model.num_parameters()

    def log_values(self, args: Any, state: Any, logs: dict[str, Any]) -> None:
        if self._sent.should_send(state):
            history = rewrite_logs({k: v for k, v in logs.items() if k not in SUMMARY_ONLY})
            self.tracker.log({**history, "train/global_step": state.global_step})

    def log_prediction(self, metrics: dict[str, Any]) -> None:
        self.tracker.log(rewrite_logs(metrics))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero and self._initialized:
            try:
                self.tracker.finish()
            finally:
                self._initialized = False
