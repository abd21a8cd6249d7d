"""HF's grouped setters on ``TrainingArguments`` (``set_training``, ``set_evaluate``...).

transformers offers them so a script can configure one concern in one call and chain the calls
(each returns the arguments). They assign fields after construction, as HF does, so the values
are checked when a Trainer is built from them, not here.
"""

from __future__ import annotations

import warnings
from typing import Any

from statetrain.args.enums import HubStrategy, IntervalStrategy, OptimizerNames, SaveStrategy, SchedulerType
from statetrain.args.types import default_optimizer


def _positive_steps(kind: str, strategy: Any, steps: float) -> None:
    if getattr(strategy, "value", strategy) == "steps" and steps == 0:
        raise ValueError(f"{kind}(strategy='steps') needs a positive `steps`; got 0")


class ArgumentSettersMixin:
    """The ``set_*`` methods of ``transformers.TrainingArguments``, with its parameter names."""

    # class-level facts HF exposes on TrainingArguments
    default_optim: str = default_optimizer().value
    is_torch_greater_or_equal_than_2_8: bool = default_optim == OptimizerNames.ADAMW_TORCH_FUSED.value

    def set_training(
        self,
        learning_rate: float = 5e-5,
        batch_size: int = 8,
        weight_decay: float = 0,
        num_epochs: float = 3,
        max_steps: int = -1,
        gradient_accumulation_steps: int = 1,
        seed: int = 42,
        activation_checkpointing: bool = False,
        gradient_checkpointing: bool | None = None,
    ) -> Any:
        """Training basics in one call; also sets ``do_train``."""
        if gradient_checkpointing is not None:
            warnings.warn(
                "set_training(gradient_checkpointing=...) is deprecated: pass activation_checkpointing",
                FutureWarning,
                stacklevel=2,
            )
            activation_checkpointing = gradient_checkpointing
        _assign(
            self,
            do_train=True,
            learning_rate=learning_rate,
            per_device_train_batch_size=batch_size,
            weight_decay=weight_decay,
            num_train_epochs=num_epochs,
            max_steps=max_steps,
            gradient_accumulation_steps=gradient_accumulation_steps,
            seed=seed,
            activation_checkpointing=activation_checkpointing,
            gradient_checkpointing=activation_checkpointing,
        )
        return self

    def set_evaluate(
        self,
        strategy: str | IntervalStrategy = "no",
        steps: int = 500,
        batch_size: int = 8,
        accumulation_steps: int | None = None,
        delay: float | None = None,
        loss_only: bool = False,
    ) -> Any:
        """Evaluation settings in one call; ``do_eval`` follows the strategy."""
        chosen = IntervalStrategy(strategy)
        _positive_steps("set_evaluate", chosen, steps)
        _assign(
            self,
            eval_strategy=chosen,
            do_eval=chosen != IntervalStrategy.NO,
            eval_steps=steps,
            per_device_eval_batch_size=batch_size,
            eval_accumulation_steps=accumulation_steps,
            eval_delay=0 if delay is None else delay,
            prediction_loss_only=loss_only,
        )
        return self

    def set_testing(self, batch_size: int = 8, loss_only: bool = False) -> Any:
        """Prediction settings in one call; also sets ``do_predict``."""
        _assign(self, do_predict=True, per_device_eval_batch_size=batch_size, prediction_loss_only=loss_only)
        return self

    def set_save(
        self,
        strategy: str | IntervalStrategy = "steps",
        steps: int = 500,
        total_limit: int | None = None,
        on_each_node: bool = False,
    ) -> Any:
        """Checkpoint settings in one call."""
        chosen = SaveStrategy(getattr(strategy, "value", strategy))
        _positive_steps("set_save", chosen, steps)
        _assign(
            self, save_strategy=chosen, save_steps=steps, save_total_limit=total_limit, save_on_each_node=on_each_node
        )
        return self

    def set_logging(
        self,
        strategy: str | IntervalStrategy = "steps",
        steps: int = 500,
        report_to: str | list[str] = "none",
        level: str = "passive",
        first_step: bool = False,
        nan_inf_filter: bool = False,
        on_each_node: bool = False,
        replica_level: str = "passive",
    ) -> Any:
        """Logging settings in one call (HF's defaults, ``nan_inf_filter=False`` included)."""
        chosen = IntervalStrategy(strategy)
        _positive_steps("set_logging", chosen, steps)
        _assign(
            self,
            logging_strategy=chosen,
            logging_steps=steps,
            report_to=report_to,
            log_level=level,
            logging_first_step=first_step,
            logging_nan_inf_filter=nan_inf_filter,
            log_on_each_node=on_each_node,
            log_level_replica=replica_level,
        )
        return self

    def set_push_to_hub(
        self,
        model_id: str,
        strategy: str | HubStrategy = "every_save",
        token: str | None = None,
        private_repo: bool | None = None,
        always_push: bool = False,
        revision: str | None = None,
    ) -> Any:
        """Hub settings in one call; turns ``push_to_hub`` on."""
        _assign(
            self,
            push_to_hub=True,
            hub_model_id=model_id,
            hub_strategy=HubStrategy(strategy),
            hub_token=token,
            hub_private_repo=private_repo,
            hub_always_push=always_push,
            hub_revision=revision,
        )
        return self

    def set_optimizer(
        self,
        name: str | OptimizerNames = "adamw_torch",
        learning_rate: float = 5e-5,
        weight_decay: float = 0,
        beta1: float = 0.9,
        beta2: float = 0.999,
        epsilon: float = 1e-8,
        args: str | None = None,
    ) -> Any:
        """Optimizer and its hyper-parameters in one call."""
        _assign(
            self,
            optim=OptimizerNames(name),
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            adam_beta1=beta1,
            adam_beta2=beta2,
            adam_epsilon=epsilon,
            optim_args=args,
        )
        return self

    def set_lr_scheduler(
        self,
        name: str | SchedulerType = "linear",
        num_epochs: float = 3.0,
        max_steps: int = -1,
        warmup_steps: float = 0,
    ) -> Any:
        """Schedule and run length in one call."""
        _assign(
            self,
            lr_scheduler_type=SchedulerType(name),
            num_train_epochs=num_epochs,
            max_steps=max_steps,
            warmup_steps=warmup_steps,
        )
        return self

    def set_dataloader(
        self,
        train_batch_size: int = 8,
        eval_batch_size: int = 8,
        drop_last: bool = False,
        num_workers: int = 0,
        pin_memory: bool = True,
        persistent_workers: bool = False,
        prefetch_factor: int | None = None,
        multiprocessing_context: str | None = None,
        in_order: bool = True,
        auto_find_batch_size: bool = False,
        ignore_data_skip: bool = False,
        sampler_seed: int | None = None,
    ) -> Any:
        """DataLoader settings in one call."""
        _assign(
            self,
            per_device_train_batch_size=train_batch_size,
            per_device_eval_batch_size=eval_batch_size,
            dataloader_drop_last=drop_last,
            dataloader_num_workers=num_workers,
            dataloader_pin_memory=pin_memory,
            dataloader_persistent_workers=persistent_workers,
            dataloader_prefetch_factor=prefetch_factor,
            dataloader_multiprocessing_context=multiprocessing_context,
            dataloader_in_order=in_order,
            auto_find_batch_size=auto_find_batch_size,
            ignore_data_skip=ignore_data_skip,
            data_seed=sampler_seed,
        )
        return self


def _assign(target: Any, **values: Any) -> None:
    for name, value in values.items():
        setattr(target, name, value)
