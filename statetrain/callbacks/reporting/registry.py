"""``report_to``: HF's integration names, which are installed, and the callbacks they stand for.

``"none"`` (or an empty list) reports nowhere; ``"all"`` reports to every integration below whose
package is installed, as HF does; a name or a list picks them. ``jsonl`` and ``csv`` need no
package; they are statetrain's own and are never part of ``"all"`` (an HF user asking for "all"
expects trackers, not extra files). A name whose package is missing is refused with the package
to install, before any training; an HF integration statetrain does not implement is refused by name.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from statetrain.args.rules import kubeflow_available

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Integration:
    """One ``report_to`` name: the callback that serves it and the package it needs."""

    name: str
    callback: str  # "module:Class" under statetrain.callbacks.reporting
    package: str | None  # what to pip install; None when nothing is needed
    in_all: bool = True  # part of report_to="all" when available
    modules: tuple[str, ...] = ()  # importable names that count as installed (default: the package)
    disabled_by: str | None = None  # an environment variable that hides it when "TRUE", as in HF
    probe: Callable[[], bool] | None = None  # an availability test of its own (no package to find)

    def available(self) -> bool:
        """Installed (found without importing it: "all" must not pay every tracker's import time)."""
        if self.disabled_by is not None and os.environ.get(self.disabled_by, "FALSE").upper() == "TRUE":
            return False
        if self.probe is not None:
            return self.probe()
        if self.package is None:
            return True
        return any(_installed(module) for module in self.modules or (self.package,))

    def load(self) -> type:
        module_name, cls_name = self.callback.split(":")
        module = importlib.import_module(f"statetrain.callbacks.reporting.{module_name}")
        cls: type = getattr(module, cls_name)
        return cls


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent that fails to import, or a module set to None
        return False


# In HF's order for "all" (get_available_reporting_integrations), then statetrain's own.
INTEGRATIONS: dict[str, Integration] = {
    item.name: item
    for item in (
        Integration("mlflow", "to_mlflow:MLflowCallback", "mlflow", disabled_by="DISABLE_MLFLOW_INTEGRATION"),
        Integration(
            "tensorboard", "to_tensorboard:TensorBoardCallback", "tensorboard", modules=("tensorboard", "tensorboardX")
        ),
        Integration("wandb", "to_wandb:WandbCallback", "wandb"),
        Integration("codecarbon", "emissions:CodeCarbonCallback", "codecarbon"),
        Integration("trackio", "to_trackio:TrackioCallback", "trackio"),
        Integration("kubeflow", "to_kubeflow:KubeflowCallback", None, probe=kubeflow_available),
        Integration("jsonl", "files:JsonLinesCallback", None, in_all=False),
        Integration("csv", "files:CsvCallback", None, in_all=False),
    )
}

# HF integrations statetrain does not implement: refused by name rather than called unknown.
HF_ONLY = frozenset(["azure_ml", "comet_ml", "clearml", "dagshub", "dvclive", "flyte", "neptune", "swanlab"])


def resolve_report_to(report_to: str | Sequence[str] | None) -> list[str]:
    """The integration names ``report_to`` means, in order, each checked (unknown or not installed: refused)."""
    if report_to is None:
        return []
    names = [report_to] if isinstance(report_to, str) else [str(getattr(n, "value", n)) for n in report_to]
    if names in (["none"], []):
        return []
    if names == ["all"]:
        return [item.name for item in INTEGRATIONS.values() if item.in_all and item.available()]
    for name in names:
        _check_name(name, names)
    return list(dict.fromkeys(names))


def _check_name(name: str, names: list[str]) -> None:
    if name in ("all", "none"):
        raise ValueError(f"TrainingArguments.report_to={names!r}: {name!r} must be given alone, not in a list")
    if name in HF_ONLY:
        raise NotImplementedError(
            f"TrainingArguments.report_to: {name!r} is a transformers integration statetrain does not implement; "
            f"supported: {sorted(INTEGRATIONS)}"
        )
    item = INTEGRATIONS.get(name)
    if item is None:
        raise ValueError(
            f"TrainingArguments.report_to: {name!r} is not an integration; choose 'none', 'all' or among "
            f"{sorted(INTEGRATIONS)}"
        )
    if name == "mlflow" and os.environ.get("DISABLE_MLFLOW_INTEGRATION", "FALSE").upper() == "TRUE":
        raise ValueError(
            "TrainingArguments.report_to names 'mlflow', but DISABLE_MLFLOW_INTEGRATION=TRUE is set; unset it "
            "or leave 'mlflow' out"
        )
    if name == "kubeflow" and not item.available():
        raise ValueError(
            "TrainingArguments.report_to names 'kubeflow', but KUBEFLOW_TRAINER_SERVER_URL is not set (or "
            "DISABLE_KUBEFLOW_INTEGRATION=TRUE is): the Kubeflow controller sets it inside a TrainJob"
        )
    if not item.available():
        raise ImportError(
            f"TrainingArguments.report_to names {name!r}, but the {item.package!r} package is not installed: "
            f"pip install {item.package} (or pip install 'statetrain[reporting]')"
        )


def reporting_callbacks(report_to: str | Sequence[str] | None) -> list[Any]:
    """One new callback per resolved name, in order (what the Trainer puts on the bus)."""
    return [INTEGRATIONS[name].load()() for name in resolve_report_to(report_to)]
