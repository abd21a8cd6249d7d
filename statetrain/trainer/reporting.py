"""HF's result helpers: ``log_metrics``, ``save_metrics``, ``save_state``, ``metrics_format``.

Every transformers example script ends with them, so they print and write exactly what HF's do:
the same table on stdout, the same ``<split>_results.json``/``all_results.json`` and
``trainer_state.json`` files, on the world's main process only.
"""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from statetrain.context.run import TrainingPlan
    from statetrain.context.state import TrainerState

logger = logging.getLogger("statetrain.trainer")


def _duration(seconds: float) -> str:
    """``h:mm:ss.cc``: whole seconds as a timedelta, then hundredths."""
    hundredths = int(abs(seconds - int(seconds)) * 100)
    return f"{datetime.timedelta(seconds=int(seconds))}.{hundredths:02d}"


def format_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Readable copies of metric values: memory in MB, runtimes as durations, FLOs in GF, floats to 4 places."""
    shown = dict(metrics)
    for key, value in metrics.items():
        if "_mem_" in key:
            shown[key] = f"{value >> 20}MB"
        elif "_runtime" in key:
            shown[key] = _duration(value)
        elif key == "total_flos":
            shown[key] = f"{int(value) >> 30}GF"
        elif isinstance(value, float):
            shown[key] = round(value, 4)
    return shown


class ReportingMixin:
    """Result printing and files, mixed into the Trainer."""

    if TYPE_CHECKING:  # what the Trainer provides
        args: Any
        state: TrainerState
        model: Any

        def is_world_process_zero(self) -> bool: ...
        def get_num_trainable_parameters(self) -> int: ...

    def metrics_format(self, metrics: dict[str, float]) -> dict[str, Any]:
        """``metrics`` with values made readable (what ``log_metrics`` prints)."""
        return format_metrics(metrics)

    def log_metrics(self, split: str, metrics: dict[str, float]) -> None:
        """Print ``***** <split> metrics *****`` and one aligned ``key = value`` line per metric, sorted."""
        if not self.is_world_process_zero():
            return
        print(f"***** {split} metrics *****")
        shown = format_metrics(metrics)
        key_width = max((len(str(k)) for k in shown), default=0)
        value_width = max((len(str(v)) for v in shown.values()), default=0)
        for key in sorted(shown):
            print(f"  {key: <{key_width}} = {shown[key]:>{value_width}}")

    def save_metrics(self, split: str, metrics: dict[str, float], combined: bool = True) -> None:
        """Write ``<split>_results.json``, and merge into ``all_results.json`` when ``combined``."""
        if not self.is_world_process_zero():
            return
        folder = Path(self.args.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{split}_results.json").write_text(json.dumps(metrics, indent=4, sort_keys=True), encoding="utf-8")
        if combined:
            everything_path = folder / "all_results.json"
            everything = json.loads(everything_path.read_text(encoding="utf-8")) if everything_path.exists() else {}
            everything.update(metrics)
            everything_path.write_text(json.dumps(everything, indent=4, sort_keys=True), encoding="utf-8")

    def save_state(self) -> None:
        """Write ``trainer_state.json`` into ``output_dir`` (``save_model`` writes only the model)."""
        if not self.is_world_process_zero():
            return
        folder = Path(self.args.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        self.state.save_to_json(folder / "trainer_state.json")

    def _log_training_banner(self, plan: TrainingPlan, resuming_at: int | None) -> None:
        """HF's "Running training" summary, logged at INFO before the first step."""
        args = self.args
        logger.info("***** Running training *****")
        logger.info("  Num examples = %s", f"{plan.num_examples:,}")
        logger.info("  Num Epochs = %s", f"{plan.num_train_epochs:,}")
        logger.info("  Num update steps per epoch = %s", f"{plan.num_update_steps_per_epoch:,}")
        logger.info("  Instantaneous batch size per device = %s", f"{args.per_device_train_batch_size:,}")
        logger.info(
            "  Total train batch size (w. parallel, distributed & accumulation) = %s",
            f"{plan.total_train_batch_size:,}",
        )
        logger.info("  Gradient Accumulation steps = %s", args.gradient_accumulation_steps)
        logger.info("  Total optimization steps = %s", f"{plan.max_steps:,}")
        logger.info("  Number of trainable parameters = %s", f"{self.get_num_trainable_parameters():,}")
        if resuming_at is not None:
            logger.info("  Resuming training from checkpoint at global step %s", resuming_at)
