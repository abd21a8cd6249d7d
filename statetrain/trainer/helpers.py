"""HF's small Trainer helpers: results printed and saved, parameter counts, learning rates, batch
sizes, parallel sizes, teardown.

Every transformers example script ends with ``log_metrics``/``save_metrics``/``save_state``, so they
print and write exactly what HF's do (the same table on stdout, the same ``<split>_results.json``,
``all_results.json`` and ``trainer_state.json``, on the world's main process only). The queries
answer from what this Trainer built (its accelerator, optimizer and plan rules).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate.utils import DistributedType
from torch import nn

from statetrain.distributed.accelerator import build_accelerator
from statetrain.distributed.plugins import deepspeed_dtype
from statetrain.engine.plan import plan_training
from statetrain.events.hf_loggers import hf_facing_logger

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

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
        """HF's "Running training" summary, logged at INFO before the first step, where HF logs it."""
        args = self.args
        banner = hf_facing_logger(logger)
        banner.info("***** Running training *****")
        banner.info("  Num examples = %s", f"{plan.num_examples:,}")
        banner.info("  Num Epochs = %s", f"{plan.num_train_epochs:,}")
        banner.info("  Num update steps per epoch = %s", f"{plan.num_update_steps_per_epoch:,}")
        banner.info("  Instantaneous batch size per device = %s", f"{args.per_device_train_batch_size:,}")
        banner.info(
            "  Total train batch size (w. parallel, distributed & accumulation) = %s",
            f"{plan.total_train_batch_size:,}",
        )
        banner.info("  Gradient Accumulation steps = %s", args.gradient_accumulation_steps)
        banner.info("  Total optimization steps = %s", f"{plan.max_steps:,}")
        banner.info("  Number of trainable parameters = %s", f"{self.get_num_trainable_parameters():,}")
        if resuming_at is not None:
            banner.info("  Resuming training from checkpoint at global step %s", resuming_at)


class IntrospectionMixin:
    """Answers about the model, optimizer and run size, mixed into the Trainer."""

    if TYPE_CHECKING:  # what the Trainer provides
        args: Any
        model: nn.Module
        optimizer: torch.optim.Optimizer | None
        accelerator: Any
        _train_batch_size: int

        def num_examples(self, dataloader: Any) -> int: ...

    def create_accelerator_and_postprocess(self) -> None:
        """Build the accelerator from the arguments and HF's flags that follow from it.

        Called by the constructor; calling it again rebuilds the accelerator for changed arguments.
        """
        self.accelerator = build_accelerator(self.args)
        self.is_deepspeed_enabled = self.accelerator.distributed_type == DistributedType.DEEPSPEED
        self.is_fsdp_enabled = self.accelerator.distributed_type == DistributedType.FSDP
        self.deepspeed: nn.Module | None = None  # the DeepSpeed engine once train() has prepared it, as in HF
        self._deepspeed_input_dtype = (
            deepspeed_dtype(self.accelerator.state.deepspeed_plugin.deepspeed_config)
            if self.is_deepspeed_enabled
            else None
        )

    def get_num_trainable_parameters(self) -> int:
        """Elements in the parameters that require a gradient."""
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def _require_optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer is None:
            raise ValueError(
                "Trainer.optimizer is None: the optimizer is built by train() or create_optimizer(); "
                "call one of them first"
            )
        return self.optimizer

    def get_learning_rates(self) -> list[float]:
        """The current learning rate of each optimizer parameter group."""
        return [group["lr"] for group in self._require_optimizer().param_groups]

    def get_optimizer_group(self, param: str | nn.Parameter | None = None) -> Any:
        """The group holding ``param``, or (no param, or not found) every group's parameter list, as HF."""
        groups = self._require_optimizer().param_groups
        if param is not None:
            for group in groups:
                if any(p is param for p in group["params"]):
                    return group
        return [group["params"] for group in groups]

    def get_sp_size(self) -> int:
        """Sequence-parallel size from accelerate's ``parallelism_config`` (1 without one)."""
        config = getattr(self.accelerator, "parallelism_config", None)
        return 1 if config is None else int(config.sp_size)

    def get_cp_size(self) -> int:
        """Context-parallel size from accelerate's ``parallelism_config`` (1 without one)."""
        config = getattr(self.accelerator, "parallelism_config", None)
        return 1 if config is None else int(config.cp_size)

    def get_tp_size(self) -> int:
        """Tensor-parallel size: the model's own, DeepSpeed AutoTP's, accelerate's, else 1."""
        own = getattr(self.model, "_tp_size", None)
        if own is not None:
            return int(own)
        if getattr(self, "is_deepspeed_enabled", False):
            config = self.accelerator.state.deepspeed_plugin.deepspeed_config
            return int(config.get("tensor_parallel", {}).get("autotp_size", 1))
        parallelism = getattr(self.accelerator, "parallelism_config", None)
        return 1 if parallelism is None else int(parallelism.tp_size)

    def get_total_train_batch_size(self, args: Any) -> int:
        """Samples per optimizer step: micro-batch x accumulation x data-parallel processes."""
        data_parallel = args.world_size // self.get_tp_size() // self.get_cp_size() // self.get_sp_size()
        return int(self._train_batch_size * args.gradient_accumulation_steps * data_parallel)

    def set_initial_training_values(
        self, args: Any, dataloader: DataLoader[Any]
    ) -> tuple[int, int, int, int | float, int, int | None, int]:
        """HF's run-length figures, in HF's order: epochs, updates per epoch, examples, samples,
        total batch size, micro-batches per epoch, max steps (the same rules train() plans with)."""
        plan = plan_training(args, dataloader, self._train_batch_size, self.num_examples)
        return (
            plan.num_train_epochs,
            plan.num_update_steps_per_epoch,
            plan.num_examples,
            plan.num_train_samples,
            plan.total_train_batch_size,
            plan.steps_in_epoch,
            plan.max_steps,
        )

    def autocast_smart_context_manager(
        self, cache_enabled: bool | None = True
    ) -> contextlib.AbstractContextManager[Any]:
        """A no-op context, as in HF: mixed precision comes from accelerate's prepared model."""
        del cache_enabled
        return contextlib.nullcontext()

    def end(self) -> None:
        """Finish the trackers and leave the process group; call once, at the very end of a script."""
        self.accelerator.end_training()
