"""Which arguments this version acts on. Anything else set to a non-default value is refused by name.

HF users pass many arguments; silently ignoring one would train something other than what they
asked for. So every field is either acted on, inert for the run (naming, evaluation knobs
that only matter to an evaluate state that is not there), or refused with the reason.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# Acted on by the engine.
IMPLEMENTED = frozenset(
    [
        "output_dir",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "learning_rate",
        "weight_decay",
        "adam_beta1",
        "adam_beta2",
        "adam_epsilon",
        "max_grad_norm",
        "num_train_epochs",
        "max_steps",
        "lr_scheduler_type",
        "warmup_steps",
        "warmup_ratio",
        "logging_strategy",
        "logging_steps",
        "logging_first_step",
        "logging_nan_inf_filter",
        "nan_inf_policy",
        # HF's SIGTERM checkpoint: statetrain checkpoints on SIGTERM in every run (docs/checkpoints.md)
        "enable_jit_checkpoint",
        "skip_memory_metrics",  # statetrain.context.memory
        "label_smoothing_factor",
        "include_num_input_tokens_seen",
        "seed",
        "data_seed",
        "full_determinism",
        "use_cpu",
        "no_cuda",
        "disable_tqdm",
        "remove_unused_columns",
        "label_names",
        "optim",
        "optim_args",
        "lr_scheduler_kwargs",
        "dataloader_num_workers",
        "dataloader_pin_memory",
        "dataloader_drop_last",
        "dataloader_persistent_workers",
        "dataloader_prefetch_factor",
        "accelerator_config",
        "average_tokens_across_devices",
        "torch_empty_cache_steps",
        "train_sampling_strategy",
        "length_column_name",
        "dataloader_multiprocessing_context",
        "activation_checkpointing",
        "activation_checkpointing_kwargs",
        "gradient_checkpointing",
        "gradient_checkpointing_kwargs",
        "torch_compile",
        "torch_compile_backend",
        "torch_compile_mode",
        "neftune_noise_alpha",
        "group_by_length",
        "auto_find_batch_size",
        "bf16",
        "fp16",
        "save_strategy",
        "save_steps",
        "save_total_limit",
        "save_only_model",
        "load_best_model_at_end",
        "restore_callback_states_from_checkpoint",
        "ignore_data_skip",
        "resume_allow_changed",
        "report_to",
        "eval_strategy",
        "evaluation_strategy",
        "eval_steps",
        "eval_delay",
        "eval_on_start",
        "eval_accumulation_steps",
        "per_device_eval_batch_size",
        "prediction_loss_only",
        "include_for_metrics",
        "eval_do_concat_batches",
        "batch_eval_metrics",
        "fp16_full_eval",
        "bf16_full_eval",
        "metric_for_best_model",
        "greater_is_better",
        # the Hub (statetrain.trainer.hub): the repository at construction, pushes per save and at the end
        "push_to_hub",
        "hub_model_id",
        "hub_strategy",
        "hub_token",
        "hub_private_repo",
        "hub_always_push",
        "hub_revision",
        # distribution (statetrain.distributed.plugins, statetrain.distributed.processes)
        "fsdp",
        "fsdp_config",
        "deepspeed",
        "ddp_find_unused_parameters",
        "ddp_bucket_cap_mb",
        "ddp_broadcast_buffers",
        "ddp_static_graph",
        "ddp_backend",
        "ddp_timeout",
        "parallelism_config",
        "log_level",
        "log_level_replica",
    ]
)

# Inert here: naming, logging targets, single-process
# distribution settings, and checkpoint knobs that only matter once a save strategy is allowed.
INERT = frozenset(
    [
        "run_name",
        "resume_from_checkpoint",
        "log_on_each_node",
        "logging_dir",
        "project",
        "trackio_space_id",
        "do_train",
        "do_eval",
        "do_predict",
        "eval_use_gather_object",
        "save_on_each_node",
        "save_safetensors",
        "overwrite_output_dir",
        "local_rank",
        "dataloader_in_order",
        "place_model_on_device",
        "optim_target_modules",
        "liger_kernel_config",
        "tf32",
    ]
)

# Refused with the capability they need, so nobody believes they took effect.
NEEDS = {
    "use_liger_kernel": "Liger kernels",
    "debug": "debug modes",
}

SUPPORTED_VALUES: dict[str, tuple[str, ...]] = {
    "train_sampling_strategy": ("random", "sequential", "group_by_length"),
}


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


def _own_fields() -> frozenset[str]:
    """What statetrain declares; a subclass's own fields (``alpha: float = 1.0``) are its author's business."""
    from statetrain.args.training_args import TrainingArguments  # that module imports this one

    return frozenset(f.name for f in dataclasses.fields(TrainingArguments))


def check_supported_arguments(args: Any) -> None:
    """Refuse, by name, every non-default argument this version would otherwise ignore."""
    # fields stay mutable after construction, so the statetrain-only choice is checked again here
    check_nan_inf_policy(getattr(args, "nan_inf_policy", "filter"))
    for name, value in args.non_default_fields().items():
        if name in IMPLEMENTED or name in INERT or name not in _own_fields():
            continue
        need = NEEDS.get(name, "a capability this version does not implement")
        raise NotImplementedError(
            f"TrainingArguments.{name}={value!r} needs {need}, which this version of statetrain "
            f"does not have yet; leave {name} at its default"
        )
    for name, allowed in SUPPORTED_VALUES.items():
        value = getattr(args, name, None)
        values = [_plain(v) for v in value] if isinstance(value, (list, tuple)) else [_plain(value)]
        bad = [v for v in values if v not in allowed]
        if bad:
            raise NotImplementedError(
                f"TrainingArguments.{name}={bad[0]!r} is not implemented yet; supported: {list(allowed)}"
            )


NAN_INF_POLICIES = ("filter", "skip", "raise", "stop")


def check_nan_inf_policy(value: Any) -> None:
    """Refuse an unknown ``nan_inf_policy`` with the allowed values."""
    if value not in NAN_INF_POLICIES:
        raise ValueError(f"TrainingArguments.nan_inf_policy must be one of {list(NAN_INF_POLICIES)}; got {value!r}")
