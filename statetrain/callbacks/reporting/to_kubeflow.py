"""``report_to="kubeflow"``: training progress for a Kubeflow TrainJob's controller, as HF reports it.

Inside a TrainJob with runtime status enabled, the controller sets ``KUBEFLOW_TRAINER_SERVER_URL``
(where to POST), ``KUBEFLOW_TRAINER_SERVER_TOKEN`` (a file holding the bearer token) and
``KUBEFLOW_TRAINER_SERVER_CA_CERT`` (the CA to trust). The arguments add ``"kubeflow"`` to
``report_to`` whenever the URL is set (``DISABLE_KUBEFLOW_INTEGRATION=TRUE`` turns that off), as HF's do.

The main process sends ``{"trainerStatus": {...}}``: progress 0 at train begin, the percentage of
``max_steps`` after steps (at most every :data:`MIN_INTERVAL` seconds, held at 99 until the end)
with an estimate of the time left and the latest logged numbers, and 100 at train end. A status
that cannot be sent is dropped with a debug line: the controller being away never stops training.
Nothing but the standard library is needed.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import time
import urllib.request
from datetime import datetime, timezone
from typing import Any

from statetrain.args.rules import kubeflow_available
from statetrain.callbacks.base import TrainerCallback

logger = logging.getLogger(__name__)

SERVER_URL = "KUBEFLOW_TRAINER_SERVER_URL"
TOKEN_FILE = "KUBEFLOW_TRAINER_SERVER_TOKEN"
CA_CERT = "KUBEFLOW_TRAINER_SERVER_CA_CERT"
MIN_INTERVAL = 5.0  # seconds between two progress updates (start and end are always sent)
TOKEN_TTL = 300.0  # the token file is re-read after this long (the controller rotates it)


class KubeflowCallback(TrainerCallback):
    """POSTs progress, time left and the latest metrics to the TrainJob controller (main process only)."""

    def __init__(self) -> None:
        if not kubeflow_available():
            raise RuntimeError(
                f"KubeflowCallback needs the {SERVER_URL} environment variable, which the Kubeflow controller "
                "sets inside a TrainJob with runtime status enabled"
            )
        self._started: float | None = None
        self._last_sent = 0.0
        self._metrics: dict[str, float] = {}
        self._token: tuple[str, float] | None = None
        self._context: ssl.SSLContext | None = None
        ca_file = os.environ.get(CA_CERT)
        if ca_file:
            try:
                self._context = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as exc:
                logger.warning("KubeflowCallback: cannot use the CA certificate %s: %s", ca_file, exc)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        self._started, self._metrics = time.time(), {}
        self.send(progress=0, metrics={"total_steps": state.max_steps} if state.max_steps else None, force=True)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if self._started is None or not state.is_world_process_zero or logs is None:
            return
        self._metrics.update({k: v for k, v in logs.items() if isinstance(v, (int, float))})

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._started is None or not state.is_world_process_zero or not state.max_steps:
            return
        done = state.global_step
        remaining = None
        if done > 0:
            remaining = int((time.time() - self._started) / done * (state.max_steps - done))
        metrics = {**self._metrics, "current_step": done, "total_steps": state.max_steps}
        if state.epoch is not None:
            metrics["current_epoch"] = round(state.epoch, 2)
        self.send(progress=min(int(done / state.max_steps * 100), 99), remaining=remaining, metrics=metrics)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._started is None or not state.is_world_process_zero:
            return
        self.send(progress=100, remaining=0, metrics=self._metrics, force=True)
        self._started = None

    def send(
        self,
        progress: int | None = None,
        remaining: int | None = None,
        metrics: dict[str, Any] | None = None,
        force: bool = False,
    ) -> bool:
        """POST one status; False when throttled or when it could not be delivered (never raises)."""
        now = time.monotonic()
        if not force and now - self._last_sent < MIN_INTERVAL:
            return False
        self._last_sent = now
        token = self._read_token(now)
        url = os.environ.get(SERVER_URL)
        if not token or not url:
            return False
        status: dict[str, Any] = {"lastUpdatedTime": datetime.now(timezone.utc).isoformat()}
        if progress is not None:
            status["progressPercentage"] = max(0, min(100, progress))
        if remaining is not None:
            status["estimatedRemainingSeconds"] = max(0, remaining)
        if metrics:
            status["metrics"] = [{"name": str(k), "value": str(v)} for k, v in metrics.items()]
        body = json.dumps({"trainerStatus": status}).encode("utf-8")
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5, context=self._context) as response:
                return bool(response.status == 200)
        except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections, a malformed URL
            logger.debug("KubeflowCallback: status not delivered: %s", exc)
            return False

    def _read_token(self, now: float) -> str | None:
        if self._token is not None and now - self._token[1] < TOKEN_TTL:
            return self._token[0]
        path = os.environ.get(TOKEN_FILE)
        if not path:
            return None
        try:
            with open(path, encoding="utf-8") as handle:
                token = handle.read().strip()
        except OSError as exc:
            logger.debug("KubeflowCallback: token file %s not read: %s", path, exc)
            return None
        self._token = (token, now)
        return token
