"""report_to's names: none / all / a name / a list, refusals naming the package or the integration."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from statetrain import Trainer, TrainingArguments
from statetrain.callbacks.reporting import CsvCallback, JsonLinesCallback, resolve_report_to
from statetrain.callbacks.reporting.to_mlflow import MLflowCallback
from statetrain.callbacks.reporting.to_tensorboard import TensorBoardCallback
from tests.helpers import TinyRegressor


def _trainer(tmp_path: Path, report_to: object) -> Trainer:
    args = TrainingArguments(output_dir=str(tmp_path), report_to=report_to, use_cpu=True, disable_tqdm=True)  # type: ignore[arg-type]
    return Trainer(model=TinyRegressor(), args=args)


@pytest.mark.parametrize("report_to", [None, "none", ["none"], []])
def test_none_reports_nowhere(report_to: object) -> None:
    assert resolve_report_to(report_to) == []  # type: ignore[arg-type]


def test_all_is_every_installed_tracker_in_hf_order_without_the_files() -> None:
    assert resolve_report_to("all") == ["mlflow", "tensorboard", "wandb", "codecarbon", "trackio"]
    assert resolve_report_to(["all"]) == resolve_report_to("all")


def test_all_leaves_out_a_tracker_that_is_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # what an import sees when the package is absent
    monkeypatch.setenv("DISABLE_MLFLOW_INTEGRATION", "TRUE")  # HF's switch
    assert resolve_report_to("all") == ["tensorboard", "codecarbon", "trackio"]


def test_names_and_lists_build_the_callbacks_in_order_after_the_flow(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, ["csv", "jsonl", "tensorboard", "mlflow"])
    kinds = [type(c) for c in trainer.callback_handler.callbacks]
    assert kinds[1:5] == [CsvCallback, JsonLinesCallback, TensorBoardCallback, MLflowCallback]
    assert [type(c) for c in _trainer(tmp_path, "jsonl").callback_handler.callbacks][1] is JsonLinesCallback


def test_a_missing_package_is_refused_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ImportError, match=r"'wandb' package is not installed: pip install wandb"):
        _trainer(tmp_path, ["jsonl", "wandb"])


def test_an_hf_integration_statetrain_lacks_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(NotImplementedError, match="'comet_ml' is a transformers integration"):
        _trainer(tmp_path, "comet_ml")


def test_an_unknown_name_is_refused_with_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'tensorbord' is not an integration.*tensorboard"):
        _trainer(tmp_path, "tensorbord")
    with pytest.raises(ValueError, match="must be given alone"):
        _trainer(tmp_path, ["all", "jsonl"])
