"""``report_to="kubeflow"``: HF's auto-enable rule, and the statuses a Kubeflow controller receives.

The controller is a real HTTP server on 127.0.0.1 that records each POST (its JSON body and bearer
token), as the TrainJob controller would receive them; transformers' own KubeflowCallback, sent to
the same kind of server, is the reference for what a run reports.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch

import statetrain
from tests.callbacks.reporting.runs import train_tiny
from tests.helpers import TinyRegressor, regression_rows

transformers = pytest.importorskip("transformers")


class Controller:
    """An HTTP endpoint that records every status POSTed to it."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.tokens: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                owner.received.append(json.loads(self.rfile.read(length))["trainerStatus"])
                owner.tokens.append(self.headers["Authorization"])
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/status"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def metrics(self, index: int) -> dict[str, str]:
        return {m["name"]: m["value"] for m in self.received[index].get("metrics", [])}


@pytest.fixture
def controller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Controller]:
    served = Controller()
    token = tmp_path / "token"
    token.write_text("secret-token\n", encoding="utf-8")
    monkeypatch.setenv("KUBEFLOW_TRAINER_SERVER_URL", served.url)
    monkeypatch.setenv("KUBEFLOW_TRAINER_SERVER_TOKEN", str(token))
    monkeypatch.delenv("KUBEFLOW_TRAINER_SERVER_CA_CERT", raising=False)
    monkeypatch.delenv("DISABLE_KUBEFLOW_INTEGRATION", raising=False)
    yield served
    served.close()


@pytest.mark.parametrize("module", [transformers, statetrain], ids=["transformers", "statetrain"])
def test_the_arguments_add_kubeflow_inside_a_trainjob_as_hf(module: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEFLOW_TRAINER_SERVER_URL", "https://controller.invalid/status")
    monkeypatch.delenv("DISABLE_KUBEFLOW_INTEGRATION", raising=False)
    assert module.TrainingArguments(output_dir="out", report_to="none").report_to == ["kubeflow"]
    assert module.TrainingArguments(output_dir="out", report_to="tensorboard").report_to == ["tensorboard", "kubeflow"]
    assert module.TrainingArguments(output_dir="out", report_to=["kubeflow"]).report_to == ["kubeflow"]
    monkeypatch.setenv("DISABLE_KUBEFLOW_INTEGRATION", "TRUE")
    assert module.TrainingArguments(output_dir="out", report_to="none").report_to == []
    monkeypatch.delenv("DISABLE_KUBEFLOW_INTEGRATION")
    monkeypatch.delenv("KUBEFLOW_TRAINER_SERVER_URL")
    assert module.TrainingArguments(output_dir="out", report_to="none").report_to == []


def test_a_run_reports_start_progress_metrics_and_end(controller: Controller, tmp_path: Path) -> None:
    train_tiny(tmp_path / "run", report_to="none", max_steps=4, eval_strategy="no", save_strategy="no")
    received = controller.received
    assert len(received) >= 2
    assert received[0]["progressPercentage"] == 0 and controller.metrics(0) == {"total_steps": "4"}
    assert received[-1]["progressPercentage"] == 100 and received[-1]["estimatedRemainingSeconds"] == 0
    last = controller.metrics(-1)
    # the run's summary is logged before train end, as in HF, so the last status carries it too
    assert float(last["loss"]) > 0 and "learning_rate" in last and "train_runtime" in last
    assert all(status["progressPercentage"] < 100 for status in received[:-1])
    assert set(controller.tokens) == {"Bearer secret-token"}


def test_the_controller_being_away_never_stops_training(controller: Controller, tmp_path: Path) -> None:
    controller.close()  # nothing listens on the URL any more
    trainer = train_tiny(tmp_path / "run", report_to="none", max_steps=3, eval_strategy="no", save_strategy="no")
    assert trainer.state.global_step == 3 and controller.received == []


def test_statuses_equal_transformers_kubeflow_callback(controller: Controller, tmp_path: Path) -> None:
    runs = []
    for module in (transformers, statetrain):
        controller.received.clear()
        torch.manual_seed(0)
        args = module.TrainingArguments(
            output_dir=str(tmp_path / module.__name__),
            max_steps=4,
            per_device_train_batch_size=4,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=True,
            seed=3,
        )
        module.Trainer(model=TinyRegressor(), args=args, train_dataset=regression_rows(48)).train()
        first, last = controller.received[0], controller.received[-1]
        runs.append(
            (
                first["progressPercentage"],
                controller.metrics(0),
                last["progressPercentage"],
                last["estimatedRemainingSeconds"],
                sorted(controller.metrics(-1)),
            )
        )
    assert runs[0] == runs[1]
