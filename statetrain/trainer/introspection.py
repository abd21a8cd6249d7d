"""HF's small Trainer helpers: parameter counts, learning rates, batch sizes, parallel sizes, teardown.

Scripts and callbacks written for transformers call them; each answers from what this Trainer
built (its accelerator, optimizer and plan rules) rather than keeping copies.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import torch
from accelerate.utils import DistributedType
from torch import nn

from statetrain.distributed.accelerator import build_accelerator
from statetrain.distributed.plugins import deepspeed_dtype
from statetrain.engine.plan import plan_training

if TYPE_CHECKING:
    from torch.utils.data import DataLoader


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
