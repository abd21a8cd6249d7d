"""The Trainer's optimizer and schedule: HF's creation hooks over the extensible registries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from statetrain.optim.optimizers import get_optimizer_cls_and_kwargs
from statetrain.optim.param_groups import decay_parameter_names, grouped_parameters
from statetrain.optim.schedulers import get_scheduler, steps_on_metrics


class OptimizationMixin:
    """``create_optimizer``, ``create_scheduler`` and the learning-rate queries, mixed into the Trainer."""

    _metrics_schedule: tuple[Any, bool] | None = None  # (scheduler, whether it steps on metrics)

    if TYPE_CHECKING:  # what the Trainer provides
        args: Any
        model: nn.Module
        optimizer: Any
        lr_scheduler: Any
        optimizer_cls_and_kwargs: tuple[Any, dict[str, Any]] | None
        _created_lr_scheduler: bool
        _optimizer_given: bool
        accelerator: Any
        deepspeed: nn.Module | None
        is_deepspeed_enabled: bool

    def _reclaim_optimizer(self) -> None:
        """Unwrap (or drop) what a previous ``train()`` prepared, so the next one wraps it once.

        accelerate's wrapper is taken off; under DeepSpeed the previous engine is released (its
        gradient hooks stay on the module otherwise) and its optimizer, rebuilt by DeepSpeed around
        its flat partitions, is dropped for a new one, as HF's ``deepspeed_init`` does.
        """
        from accelerate.optimizer import AcceleratedOptimizer

        if isinstance(self.optimizer, AcceleratedOptimizer):
            self.optimizer = self.optimizer.optimizer  # never wrap twice across train() calls
        if self.deepspeed is not None:
            if self.accelerator.state.deepspeed_plugin.zero_stage == 3:
                raise RuntimeError(
                    "train() was already called on this Trainer under DeepSpeed ZeRO-3, which left the model's "
                    "parameters partitioned; build a new Trainer (with resume_from_checkpoint to continue)"
                )
            self.accelerator.free_memory()  # destroys the engine, which removes its hooks
            self.deepspeed = None
        replaced = self.optimizer is not None and not isinstance(self.optimizer, torch.optim.Optimizer)
        if self.is_deepspeed_enabled and replaced:
            if self._optimizer_given:
                raise RuntimeError(
                    "train() was called again on a Trainer whose `optimizers` DeepSpeed has taken over (it now steps "
                    "DeepSpeed's flat partitions); under deepspeed, let the Trainer build the optimizer (optim=...) or "
                    "build a new Trainer for each train()"
                )
            self.optimizer = None

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        return decay_parameter_names(model)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """The optimizer named by ``optim`` (or ``optimizer_cls_and_kwargs``) over HF's decay groups."""
        target = self.model if model is None else model
        if self.optimizer is None:
            if self.optimizer_cls_and_kwargs is not None:
                optimizer_cls, kwargs = self.optimizer_cls_and_kwargs
            else:
                optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, target)
            kwargs = dict(kwargs)
            groups: Any = kwargs.pop("params", None) or grouped_parameters(target, self.args.weight_decay)
            # as HF: LOMO is built over the model, a layer-wise dummy over its per-parameter optimizers
            for first in ("model", "optimizer_dict"):
                if first in kwargs:
                    groups = kwargs.pop(first)
            self.optimizer = optimizer_cls(groups, **kwargs)
            from statetrain.optim.package_optimizers import keep_embeddings_in_32_bits

            keep_embeddings_in_32_bits(optimizer_cls, kwargs, target)
        return self.optimizer

    @staticmethod
    def get_optimizer_cls_and_kwargs(args: Any, model: nn.Module | None = None) -> tuple[Any, dict[str, Any]]:
        """HF's hook: the optimizer class and keyword arguments the registry builds for ``args.optim``."""
        return get_optimizer_cls_and_kwargs(args, model)

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        """The schedule named by ``lr_scheduler_type``, created once per ``train()`` (HF semantics)."""
        if self.lr_scheduler is None:
            target = self.optimizer if optimizer is None else optimizer
            assert target is not None
            self.lr_scheduler = get_scheduler(
                str(getattr(self.args.lr_scheduler_type, "value", self.args.lr_scheduler_type)),
                target,
                num_warmup_steps=self.args.get_warmup_steps(num_training_steps),
                num_training_steps=num_training_steps,
                scheduler_specific_kwargs=self.args.lr_scheduler_kwargs,
            )
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def create_optimizer_and_scheduler(self, num_training_steps: int) -> None:
        self.create_optimizer()
        self.create_scheduler(num_training_steps=num_training_steps)

    @property
    def _scheduler_steps_on_metrics(self) -> bool:
        """A plateau (or ``GreedyLR``) scheduler steps on evaluation metrics, not after every optimizer step.

        Asked once per scheduler object: ``_get_learning_rate`` reads it on every optimizer step."""
        scheduler, known = self.lr_scheduler, self._metrics_schedule
        if known is None or known[0] is not scheduler:
            known = self._metrics_schedule = (scheduler, steps_on_metrics(scheduler))
        return known[1]

    def _step_scheduler_on_metrics(self, metrics: dict[str, float]) -> None:
        """Step a plateau schedule on ``metric_for_best_model`` after an evaluation (HF ``_evaluate``)."""
        if not self._scheduler_steps_on_metrics:
            return
        name = self.args.metric_for_best_model or "loss"
        key = name if name.startswith("eval_") else f"eval_{name}"
        if key not in metrics:
            raise KeyError(
                f"TrainingArguments.metric_for_best_model is set to {key!r}, which is not found in the evaluation "
                f"metrics {sorted(metrics)}: return it from compute_metrics or choose one of those"
            )
        self.lr_scheduler.step(metrics[key])

    def _get_learning_rate(self) -> float:
        if self._scheduler_steps_on_metrics:
            assert self.optimizer is not None
            lr = self.optimizer.param_groups[0]["lr"]
        else:
            lr = self.lr_scheduler.get_last_lr()[0]
        return float(lr.item()) if torch.is_tensor(lr) else float(lr)
