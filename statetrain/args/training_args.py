"""``TrainingArguments``: transformers 5.24's training configuration, validated when it is built.

Field names, defaults and the ``__post_init__`` derivations follow transformers 5.24, so code and
command lines written for ``transformers.TrainingArguments`` work unchanged, ``HfArgumentParser``
included. What differs is on purpose: a wrong type, an unknown or misspelt name, an invalid choice
or an inconsistent combination fails at construction, naming the field; and building the object
touches no device. The pieces: ``arg_types`` (field types), ``arg_rules`` (post-init derivations
and cross-field checks), ``arg_runtime`` (device/process facts), ``arg_enums`` (value enums).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import field
from typing import Annotated, Any, Literal

from annotated_types import Gt
from pydantic import ConfigDict, NonNegativeFloat, NonNegativeInt, PositiveInt, Strict, model_validator
from pydantic.dataclasses import dataclass
from pydantic_core import ArgsKwargs

from statetrain.args.accelerator_config import AcceleratorConfig
from statetrain.args.enums import (
    DebugOption,
    FSDPOption,
    HubStrategy,
    IntervalStrategy,
    OptimizerNames,
    ParallelMode,
    SaveStrategy,
    SchedulerType,
)
from statetrain.args.names import unknown_names_message
from statetrain.args.removed import removed_names_message
from statetrain.args.rules import DEPRECATED_NAMES, RETIRED_OR_RENAMED, finalize
from statetrain.args.runtime import ProcessFactsMixin
from statetrain.args.serialization import _default_values, _plain, _restore_declared_field_types
from statetrain.args.setters import ArgumentSettersMixin
from statetrain.args.types import (
    DDP_BACKEND_CHOICES,
    LOG_LEVEL_CHOICES,
    SAMPLING_CHOICES,
    WORKER_START_CHOICES,
    AcceleratorConfigValue,
    Beta,
    DdpBackend,
    DebugValue,
    Fraction,
    FsdpValue,
    HubChoice,
    IntervalChoice,
    LogLevel,
    OptimizerChoice,
    PathStr,
    SamplingStrategy,
    SaveChoice,
    SchedulerChoice,
    WorkerStart,
    default_optimizer,
    help_text,
)

__all__ = [
    "AcceleratorConfig",
    "DebugOption",
    "FSDPOption",
    "HubStrategy",
    "IntervalStrategy",
    "OptimizerNames",
    "ParallelMode",
    "SaveStrategy",
    "SchedulerType",
    "TrainingArguments",
]


@dataclass(config=ConfigDict(extra="forbid"))
class TrainingArguments(ArgumentSettersMixin, ProcessFactsMixin):
    """Everything that configures a training run, with transformers 5.24's names and defaults.

    ``output_dir`` may be given positionally. Fields can be reassigned after construction, as
    with HF; only construction validates. Device and process facts (``device``, ``world_size``,
    ``process_index``...) come from accelerate the first time they are read (``ProcessFactsMixin``).
    """

    # --- Output ---
    output_dir: PathStr | None = field(
        default=None, metadata=help_text("Where checkpoints and outputs go. Default: 'trainer_output'.")
    )

    # --- Duration and batch size ---
    per_device_train_batch_size: PositiveInt = field(default=8, metadata=help_text("Training batch per device."))
    num_train_epochs: float = field(default=3.0, metadata=help_text("Passes over the training data."))
    max_steps: int = field(
        default=-1, metadata=help_text("Total optimizer steps; a positive value overrides num_train_epochs.")
    )

    # --- Learning rate and schedule ---
    learning_rate: NonNegativeFloat = field(default=5e-5, metadata=help_text("Peak learning rate."))
    lr_scheduler_type: SchedulerChoice = field(default=SchedulerType.LINEAR, metadata=help_text("Schedule family."))
    lr_scheduler_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata=help_text("Extra scheduler options (a dict or a JSON object string).")
    )
    warmup_steps: NonNegativeFloat = field(
        default=0, metadata=help_text("Warm-up steps; a float below 1 is a ratio of the total steps.")
    )

    # --- Optimizer ---
    optim: OptimizerChoice = field(default=default_optimizer(), metadata=help_text("Optimizer name."))
    optim_args: str | None = field(default=None, metadata=help_text("Extra optimizer options as 'k=v,k=v'."))
    weight_decay: NonNegativeFloat = field(
        default=0.0, metadata=help_text("Weight decay, not applied to biases and norm weights.")
    )
    adam_beta1: Beta = field(default=0.9, metadata=help_text("Adam first-moment decay."))
    adam_beta2: Beta = field(default=0.999, metadata=help_text("Adam second-moment decay."))
    adam_epsilon: NonNegativeFloat = field(default=1e-8, metadata=help_text("Adam epsilon."))
    # HfArgumentParser reads a union's order: keep transformers' order where it matters for the CLI.
    optim_target_modules: None | str | list[str] = field(  # noqa: RUF036
        default=None, metadata=help_text("Modules a GaLore/APOLLO optimizer acts on.")
    )

    # --- Regularisation and stability ---
    gradient_accumulation_steps: PositiveInt = field(default=1, metadata=help_text("Micro-batches per optimizer step."))
    average_tokens_across_devices: bool = field(
        default=True, metadata=help_text("Sum the loss's token count over all processes.")
    )
    max_grad_norm: float = field(default=1.0, metadata=help_text("Gradient clipping norm; 0 disables clipping."))
    label_smoothing_factor: Fraction = field(default=0.0, metadata=help_text("Label smoothing; 0 disables it."))

    # --- Mixed precision ---
    bf16: bool = field(default=False, metadata=help_text("bfloat16 mixed precision."))
    fp16: bool = field(default=False, metadata=help_text("float16 mixed precision."))
    bf16_full_eval: bool = field(default=False, metadata=help_text("Evaluate fully in bfloat16."))
    fp16_full_eval: bool = field(default=False, metadata=help_text("Evaluate fully in float16."))
    tf32: bool | None = field(default=None, metadata=help_text("TF32 matmuls on Ampere or newer GPUs."))

    # --- Activation checkpointing (gradient_checkpointing* are HF's deprecated mirrors) ---
    activation_checkpointing: bool | None = field(
        default=None,
        metadata=help_text("Recompute activations in backward to save memory.", nargs="?", const=True),
    )
    activation_checkpointing_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata=help_text("Options for activation checkpointing (a dict or JSON string).")
    )
    gradient_checkpointing: bool | None = field(
        default=None, metadata=help_text("Deprecated: use activation_checkpointing.", nargs="?", const=True)
    )
    gradient_checkpointing_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata=help_text("Deprecated: use activation_checkpointing_kwargs.")
    )

    # --- Compilation and kernels ---
    torch_compile: bool = field(default=False, metadata=help_text("Compile the model with torch.compile."))
    torch_compile_backend: str | None = field(
        default=None, metadata=help_text("torch.compile backend; setting it turns torch_compile on.")
    )
    torch_compile_mode: str | None = field(
        default=None, metadata=help_text("torch.compile mode; setting it turns torch_compile on.")
    )
    use_liger_kernel: bool = field(default=False, metadata=help_text("Patch the model with Liger kernels."))
    liger_kernel_config: dict[str, bool] | None = field(default=None, metadata=help_text("Liger kernel options."))
    use_cache: bool = field(default=False, metadata=help_text("Keep the model's KV cache on during training."))
    neftune_noise_alpha: float | None = field(default=None, metadata=help_text("NEFTune embedding noise."))
    torch_empty_cache_steps: Annotated[int, Strict(), Gt(0)] | None = field(
        default=None, metadata=help_text("Empty the accelerator cache every N steps.")
    )
    auto_find_batch_size: bool = field(
        default=False, metadata=help_text("Halve the batch size and retry after an out-of-memory error.")
    )

    # --- Logging ---
    logging_strategy: IntervalChoice = field(default=IntervalStrategy.STEPS, metadata=help_text("When to log."))
    logging_steps: float = field(
        default=500, metadata=help_text("Log every N steps; a float below 1 is a ratio of the total steps.")
    )
    logging_first_step: bool = field(default=False, metadata=help_text("Also log the first step."))
    log_on_each_node: bool = field(default=True, metadata=help_text("Log from each node's main process."))
    logging_nan_inf_filter: bool = field(
        default=True, metadata=help_text("Leave NaN/Inf step losses out of the logged loss.")
    )
    include_num_input_tokens_seen: str | bool = field(
        default="no",
        metadata=help_text("Count input tokens: 'all', 'non_padding' or 'no' (True/False allowed)."),
    )
    # statetrain only: on a NaN/Inf loss, filter (HF), skip the step, raise, or stop with a checkpoint
    nan_inf_policy: Literal["filter", "skip", "raise", "stop"] = field(default="filter", metadata=help_text("NaN/Inf"))
    log_level: LogLevel = field(
        default="passive", metadata=help_text("Log level of the main process.", choices=LOG_LEVEL_CHOICES)
    )
    log_level_replica: LogLevel = field(
        default="warning", metadata=help_text("Log level of other processes.", choices=LOG_LEVEL_CHOICES)
    )
    disable_tqdm: bool | None = field(
        default=None,
        metadata=help_text("Hide progress bars (default: when logging is quieter than WARNING)."),
    )

    # --- Experiment tracking ---
    report_to: None | str | list[str] = field(  # noqa: RUF036
        default="none", metadata=help_text("Integrations to report to: 'none', 'all', a name or a list.")
    )
    run_name: str | None = field(default=None, metadata=help_text("Run name shown by trackers."))
    project: str = field(default="huggingface", metadata=help_text("Project name (Trackio)."))
    trackio_space_id: str | None = field(default=None, metadata=help_text("Trackio Space id."))
    trackio_bucket_id: str | None = field(default=None, metadata=help_text("Trackio Bucket id."))
    trackio_static_space_id: str | None | Literal[False] = field(  # noqa: RUF036
        default=None, metadata=help_text("Static Trackio Space id, or False for none.")
    )

    # --- Evaluation ---
    eval_strategy: IntervalChoice = field(default=IntervalStrategy.NO, metadata=help_text("When to evaluate."))
    eval_steps: float | None = field(
        default=None, metadata=help_text("Evaluate every N steps (default: logging_steps); below 1, a ratio.")
    )
    eval_delay: float = field(default=0, metadata=help_text("No evaluation before this many steps or epochs."))
    per_device_eval_batch_size: PositiveInt = field(default=8, metadata=help_text("Evaluation batch per device."))
    prediction_loss_only: bool = field(default=False, metadata=help_text("Evaluation returns only the loss."))
    eval_on_start: bool = field(default=False, metadata=help_text("Evaluate once before the first step."))
    eval_do_concat_batches: bool = field(
        default=True, metadata=help_text("Concatenate evaluation outputs across batches (else keep a list).")
    )
    eval_use_gather_object: bool = field(
        default=False, metadata=help_text("Gather arbitrary objects from all processes during evaluation.")
    )
    eval_accumulation_steps: PositiveInt | None = field(
        default=None, metadata=help_text("Move evaluation outputs to CPU every N batches.")
    )
    include_for_metrics: list[str] = field(
        default_factory=list, metadata=help_text("Extra inputs for compute_metrics: 'inputs', 'loss'.")
    )
    batch_eval_metrics: bool = field(default=False, metadata=help_text("Compute metrics batch by batch."))

    # --- Checkpoints ---
    save_only_model: bool = field(
        default=False,
        metadata=help_text("Save weights only (no optimizer, scheduler or RNG): not resumable."),
    )
    save_strategy: SaveChoice = field(default=SaveStrategy.STEPS, metadata=help_text("When to save."))
    save_steps: float = field(
        default=500, metadata=help_text("Save every N steps; a float below 1 is a ratio of the total steps.")
    )
    save_on_each_node: bool = field(default=False, metadata=help_text("Save on every node, not only the first."))
    save_total_limit: int | None = field(
        default=None, metadata=help_text("Keep at most N checkpoints (the newest and the best are kept).")
    )
    enable_jit_checkpoint: bool = field(default=False, metadata=help_text("Save a checkpoint on SIGTERM."))

    # --- Hub (statetrain.trainer.hub) ---
    push_to_hub: bool = field(default=False, metadata=help_text("Push saved models to the Hub."))
    hub_token: str | None = field(default=None, metadata=help_text("Hub token."))
    hub_private_repo: bool | None = field(default=None, metadata=help_text("Make the Hub repository private."))
    hub_model_id: str | None = field(default=None, metadata=help_text("Hub repository to push to."))
    hub_strategy: HubChoice = field(default=HubStrategy.EVERY_SAVE, metadata=help_text("What to push, when."))
    hub_always_push: bool = field(default=False, metadata=help_text("Push even if the last push is unfinished."))
    hub_revision: str | None = field(default=None, metadata=help_text("Hub revision to push to."))

    # --- Best model ---
    load_best_model_at_end: bool = field(default=False, metadata=help_text("Reload the best checkpoint at end."))
    metric_for_best_model: str | None = field(
        default=None, metadata=help_text("Metric that defines 'best' (default 'loss' when needed).")
    )
    greater_is_better: bool | None = field(
        default=None, metadata=help_text("Larger metric is better (default: unless the name ends in 'loss').")
    )

    # --- Resume and reproducibility ---
    ignore_data_skip: bool = field(default=False, metadata=help_text("On resume, do not skip seen batches."))
    resume_allow_changed: list[str] | None = field(
        default=None,
        metadata=help_text(
            "statetrain: on resume, accept these settings differing from the checkpoint's "
            "(per_device_train_batch_size, gradient_accumulation_steps, dataset_length) instead of refusing; "
            "the data position is recomputed in samples."
        ),
    )
    restore_callback_states_from_checkpoint: bool = field(
        default=False, metadata=help_text("On resume, restore the state of stateful callbacks.")
    )
    full_determinism: bool = field(default=False, metadata=help_text("Use deterministic algorithms (slower)."))
    seed: int = field(default=42, metadata=help_text("Seed set at the start of training."))
    data_seed: int | None = field(default=None, metadata=help_text("Seed for data samplers (default: seed)."))

    # --- Hardware and accelerate ---
    use_cpu: bool = field(default=False, metadata=help_text("Train on CPU even if an accelerator is present."))
    accelerator_config: AcceleratorConfigValue = field(
        default=None, metadata=help_text("accelerate settings: a dict, a JSON string or a JSON file path.")
    )
    parallelism_config: Any = field(default=None, metadata=help_text("accelerate ParallelismConfig."))

    # --- Data loading ---
    dataloader_drop_last: bool = field(default=False, metadata=help_text("Drop the last incomplete batch."))
    dataloader_num_workers: NonNegativeInt = field(
        default=0, metadata=help_text("DataLoader worker processes (0: load in the main process).")
    )
    dataloader_pin_memory: bool = field(default=True, metadata=help_text("Pin DataLoader memory."))
    dataloader_persistent_workers: bool = field(
        default=False, metadata=help_text("Keep DataLoader workers alive between epochs.")
    )
    dataloader_prefetch_factor: PositiveInt | None = field(
        default=None, metadata=help_text("Batches each worker loads ahead.")
    )
    dataloader_multiprocessing_context: WorkerStart | None = field(
        default=None, metadata=help_text("Start method of DataLoader workers.", choices=WORKER_START_CHOICES)
    )
    dataloader_in_order: bool = field(default=True, metadata=help_text("Yield batches in dispatch order."))
    remove_unused_columns: bool = field(
        default=True, metadata=help_text("Drop dataset columns the model's forward does not take.")
    )
    label_names: list[str] | None = field(default=None, metadata=help_text("Batch keys that hold labels."))
    train_sampling_strategy: SamplingStrategy = field(
        default="random", metadata=help_text("Training sampler.", choices=SAMPLING_CHOICES)
    )
    length_column_name: str = field(
        default="length", metadata=help_text("Column of precomputed lengths for length-aware sampling.")
    )

    # --- Distributed ---
    ddp_find_unused_parameters: bool | None = field(default=None, metadata=help_text("DDP find_unused_parameters."))
    ddp_bucket_cap_mb: int | None = field(default=None, metadata=help_text("DDP bucket_cap_mb."))
    ddp_broadcast_buffers: bool | None = field(default=None, metadata=help_text("DDP broadcast_buffers."))
    ddp_static_graph: bool | None = field(default=None, metadata=help_text("DDP static_graph."))
    ddp_backend: DdpBackend | None = field(
        default=None, metadata=help_text("torch.distributed backend.", choices=DDP_BACKEND_CHOICES)
    )
    ddp_timeout: int = field(default=1800, metadata=help_text("Process-group timeout in seconds."))
    fsdp: FsdpValue = field(
        default=None, metadata=help_text("Enable FSDP (True, or legacy option words).", nargs="?", const=True)
    )
    fsdp_config: dict[str, Any] | str | None = field(
        default=None, metadata=help_text("FSDP settings: a dict, a JSON string or a JSON file path.")
    )
    deepspeed: dict[str, Any] | str | None = field(
        default=None, metadata=help_text("DeepSpeed config: a dict, a JSON string or a JSON file path.")
    )

    # --- Debugging ---
    debug: DebugValue = field(default="", metadata=help_text("Debug features, space separated."))
    skip_memory_metrics: bool = field(default=True, metadata=help_text("Skip memory profiling in metrics."))

    # --- Flags for scripts (the Trainer ignores them) ---
    do_train: bool = field(default=False, metadata=help_text("Script flag: run training."))
    do_eval: bool = field(default=False, metadata=help_text("Script flag: run evaluation."))
    do_predict: bool = field(default=False, metadata=help_text("Script flag: run prediction."))
    resume_from_checkpoint: PathStr | None = field(
        default=None, metadata=help_text("Script flag: checkpoint folder to resume from.")
    )
    local_rank: int = field(default=-1, metadata=help_text("Set by old launchers; read local_process_index."))

    # --- transformers 4.x names: accepted with a FutureWarning, folded into the fields above ---
    evaluation_strategy: IntervalChoice | None = field(default=None, metadata=help_text("Deprecated: eval_strategy."))
    no_cuda: bool | None = field(default=None, metadata=help_text("Deprecated: use_cpu.", nargs="?", const=True))
    per_gpu_train_batch_size: PositiveInt | None = field(
        default=None, metadata=help_text("Deprecated: per_device_train_batch_size.")
    )
    per_gpu_eval_batch_size: PositiveInt | None = field(
        default=None, metadata=help_text("Deprecated: per_device_eval_batch_size.")
    )
    warmup_ratio: NonNegativeFloat | None = field(
        default=None, metadata=help_text("Deprecated: pass the ratio as warmup_steps (a float below 1).")
    )
    group_by_length: bool | None = field(
        default=None,
        metadata=help_text("Deprecated: train_sampling_strategy='group_by_length'.", nargs="?", const=True),
    )
    include_inputs_for_metrics: bool | None = field(
        default=None, metadata=help_text("Deprecated: include_for_metrics=['inputs'].", nargs="?", const=True)
    )
    overwrite_output_dir: bool | None = field(
        default=None, metadata=help_text("Removed in transformers 5; has no effect.", nargs="?", const=True)
    )
    logging_dir: PathStr | None = field(
        default=None,
        metadata=help_text("Removed in transformers 5; use the TENSORBOARD_LOGGING_DIR variable."),
    )
    save_safetensors: bool | None = field(
        default=None,
        metadata=help_text("Removed in transformers 5; always safetensors.", nargs="?", const=True),
    )
    jit_mode_eval: bool | None = field(
        default=None, metadata=help_text("Removed in transformers 5; has no effect.", nargs="?", const=True)
    )
    use_mps_device: bool | None = field(
        default=None,
        metadata=help_text("Removed in transformers 5; MPS is automatic.", nargs="?", const=True),
    )

    # ------------------------------------------------------------------ construction

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_names(cls, data: Any) -> Any:
        """Fail on a misspelt keyword with the likely intended name, before any field is validated."""
        given = (data.kwargs or {}) if isinstance(data, ArgsKwargs) else data
        if isinstance(given, dict):
            known = {f.name for f in dataclasses.fields(cls) if f.init}
            unknown = set(given) - known
            removed = removed_names_message(cls.__name__, unknown)
            if removed is not None:  # a TypeError, as transformers 5.24 gives: pydantic passes it through
                raise TypeError(removed)
            if unknown:
                raise ValueError(unknown_names_message(cls.__name__, unknown, known))
        return data

    def __post_init__(self) -> None:
        finalize(self)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # HfArgumentParser overwrites the stored field types in place; a subclass built afterwards
        # must see the declared ones, or pydantic would validate it against the stripped types.
        _restore_declared_field_types(cls)
        super().__init_subclass__(**kwargs)

    # ------------------------------------------------------------------ derived values

    def get_warmup_steps(self, num_training_steps: int) -> int:
        """Warm-up length: ``warmup_steps`` when at least 1, else that ratio of the steps, rounded up."""
        if self.warmup_steps >= 1:
            return int(self.warmup_steps)
        return math.ceil(num_training_steps * self.warmup_steps)

    def non_default_fields(self) -> dict[str, Any]:
        """Fields whose value differs from a default-built instance of the same class, by name.

        The Trainer uses it to refuse arguments it does not implement, naming them. Values the
        post-init derives from a changed field (``do_eval`` from ``eval_strategy``...) appear too;
        the deprecated 4.x names never do, their effect shows under the new name.
        """
        reference = _default_values(type(self))
        changed: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if not f.init or f.name in DEPRECATED_NAMES:
                continue
            value = getattr(self, f.name)
            if f.name not in reference or value != reference[f.name]:
                changed[f.name] = value
        return changed

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the fields, as HF makes it: enums as values, ``*_token`` masked.

        The 4.x names that are no field of transformers 5.24 are left out (they are None after
        construction anyway); ``gradient_checkpointing*`` stay, as in transformers.
        """
        return {
            f.name: _plain(f.name, getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.init and f.name not in RETIRED_OR_RENAMED
        }

    def to_json_string(self) -> str:
        """``to_dict()`` as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)

    def to_sanitized_dict(self) -> dict[str, Any]:
        """Flat dict for hyper-parameter panels (TensorBoard hparams): scalars kept, the rest as str."""
        flat = self.to_dict()
        flat.update(train_batch_size=self.train_batch_size, eval_batch_size=self.eval_batch_size)
        return {k: v if type(v) in (bool, int, float, str) else str(v) for k, v in flat.items()}

    def __str__(self) -> str:
        lines = "".join(f"{name}={value},\n" for name, value in sorted(self.to_dict().items()))
        return f"{type(self).__name__}(\n{lines})"

    __repr__ = __str__
