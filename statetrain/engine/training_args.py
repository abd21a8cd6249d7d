"""``TrainingArguments``: transformers 5.24's training configuration, validated when it is built.

Field names, defaults and the ``__post_init__`` derivations follow transformers 5.24, so code and
command lines written for ``transformers.TrainingArguments`` work unchanged, including
``HfArgumentParser``. What differs is on purpose: a wrong type, an unknown or misspelt name, an
invalid choice or an inconsistent combination fails at construction with the field's name, and
building the object touches no device. See ``arg_rules`` for the derivations and checks and
``arg_runtime`` for the lazily computed device/process facts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import typing
import warnings
from collections.abc import Iterator
from dataclasses import field
from datetime import timedelta
from enum import Enum
from importlib import metadata as importlib_metadata
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PlainValidator,
    PositiveInt,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic_core import ArgsKwargs

from statetrain.engine.accelerator_config import AcceleratorConfig
from statetrain.engine.arg_enums import (
    LOG_LEVELS,
    DebugOption,
    FSDPOption,
    HubStrategy,
    IntervalStrategy,
    OptimizerNames,
    ParallelMode,
    SaveStrategy,
    SchedulerType,
)
from statetrain.engine.arg_names import unknown_names_message
from statetrain.engine.arg_rules import DEPRECATED_NAMES, RETIRED_OR_RENAMED, finalize
from statetrain.engine.arg_runtime import RuntimeInfo, RuntimeSettings, resolve_runtime

if TYPE_CHECKING:
    import torch

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


def _help(text: str, **argparse_options: Any) -> dict[str, Any]:
    """Field metadata in the shape ``HfArgumentParser`` passes on to ``argparse``."""
    return {"help": text, **argparse_options}


def _fspath(value: Any) -> Any:
    """Accept ``pathlib.Path`` (and other path-likes) wherever a directory name is expected."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _none_to_empty(value: Any) -> Any:
    """``HfArgumentParser`` hands ``debug`` over as None when the flag is absent."""
    return "" if value is None else value


def _fsdp_value(value: Any) -> Any:
    """Accept what transformers accepts for ``fsdp``: None, a bool, or legacy option words (str or list)."""
    if value is None or isinstance(value, bool):
        return value
    words = value.split() if isinstance(value, str) else value
    if not isinstance(words, (list, tuple)) or not all(isinstance(word, str) for word in words):
        raise ValueError(f"fsdp must be None, a bool, or FSDP option words; got {type(value).__name__}")
    unknown = [word for word in words if word not in FSDPOption.choices()]
    if unknown:
        raise ValueError(f"fsdp got unknown option(s) {unknown}; choose from {FSDPOption.choices()}")
    return value


def _accelerator_config_input(value: Any) -> Any:
    """Let strings and dicts through for the post-init; turn any other config object into ours now."""
    if value is None or isinstance(value, (str, dict, AcceleratorConfig)):
        return value
    return AcceleratorConfig.coerce(value)


def _default_optimizer() -> str:
    """transformers picks the fused AdamW from torch 2.8 on; read the version without importing torch."""
    try:
        version = importlib_metadata.version("torch")
    except importlib_metadata.PackageNotFoundError:
        return OptimizerNames.ADAMW_TORCH.value
    found = re.match(r"(\d+)\.(\d+)", version)
    if found and (int(found.group(1)), int(found.group(2))) >= (2, 8):
        return OptimizerNames.ADAMW_TORCH_FUSED.value
    return OptimizerNames.ADAMW_TORCH.value


# Types HfArgumentParser reads without the Annotated extras (it calls get_type_hints plainly), so
# pydantic gets constraints that the command line never sees.
PathStr = Annotated[str, BeforeValidator(_fspath)]
Beta = Annotated[float, Field(ge=0.0, lt=1.0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
LogLevel = Literal["detail", "debug", "info", "warning", "error", "critical", "passive"]
DdpBackend = Literal["nccl", "gloo", "mpi", "xccl", "hccl", "cncl", "mccl"]
SamplingStrategy = Literal["random", "sequential", "group_by_length", "batch_rebalance"]


@dataclass(config=ConfigDict(extra="forbid"))
class TrainingArguments:
    """Everything that configures a training run, with transformers 5.24's names and defaults.

    ``output_dir`` may be given positionally. Fields can be reassigned after construction (as
    with HF); only construction validates. Device and process facts (``device``, ``world_size``,
    ``process_index``...) are computed from accelerate the first time they are read.
    """

    # --- Output ---
    output_dir: PathStr | None = field(
        default=None, metadata=_help("Where checkpoints and outputs go. Default: 'trainer_output'.")
    )

    # --- Duration and batch size ---
    per_device_train_batch_size: PositiveInt = field(default=8, metadata=_help("Training batch per device."))
    num_train_epochs: float = field(default=3.0, metadata=_help("Passes over the training data."))
    max_steps: int = field(
        default=-1, metadata=_help("Total optimizer steps; a positive value overrides num_train_epochs.")
    )

    # --- Learning rate and schedule ---
    learning_rate: NonNegativeFloat = field(default=5e-5, metadata=_help("Peak learning rate."))
    lr_scheduler_type: SchedulerType = field(default=SchedulerType.LINEAR, metadata=_help("Schedule family."))
    lr_scheduler_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata=_help("Extra scheduler options (a dict or a JSON object string).")
    )
    warmup_steps: NonNegativeFloat = field(
        default=0, metadata=_help("Warm-up steps; a float below 1 is a ratio of the total steps.")
    )

    # --- Optimizer ---
    optim: OptimizerNames = field(
        default=OptimizerNames(_default_optimizer()), metadata=_help("Optimizer name.")
    )
    optim_args: str | None = field(default=None, metadata=_help("Extra optimizer options as 'k=v,k=v'."))
    weight_decay: NonNegativeFloat = field(
        default=0.0, metadata=_help("Weight decay, not applied to biases and norm weights.")
    )
    adam_beta1: Beta = field(default=0.9, metadata=_help("Adam first-moment decay."))
    adam_beta2: Beta = field(default=0.999, metadata=_help("Adam second-moment decay."))
    adam_epsilon: NonNegativeFloat = field(default=1e-8, metadata=_help("Adam epsilon."))
    # HfArgumentParser reads a union's order: keep transformers' order where it matters for the CLI.
    optim_target_modules: None | str | list[str] = field(  # noqa: RUF036
        default=None, metadata=_help("Modules a GaLore/APOLLO optimizer acts on.")
    )

    # --- Regularisation and stability ---
    gradient_accumulation_steps: PositiveInt = field(
        default=1, metadata=_help("Micro-batches per optimizer step.")
    )
    average_tokens_across_devices: bool = field(
        default=True, metadata=_help("Sum the loss's token count over all processes.")
    )
    max_grad_norm: float = field(default=1.0, metadata=_help("Gradient clipping norm; 0 disables clipping."))
    label_smoothing_factor: Fraction = field(default=0.0, metadata=_help("Label smoothing; 0 disables it."))

    # --- Mixed precision ---
    bf16: bool = field(default=False, metadata=_help("bfloat16 mixed precision."))
    fp16: bool = field(default=False, metadata=_help("float16 mixed precision."))
    bf16_full_eval: bool = field(default=False, metadata=_help("Evaluate fully in bfloat16."))
    fp16_full_eval: bool = field(default=False, metadata=_help("Evaluate fully in float16."))
    tf32: bool | None = field(default=None, metadata=_help("TF32 matmuls on Ampere or newer GPUs."))

    # --- Activation checkpointing (gradient_checkpointing* are HF's deprecated mirrors) ---
    activation_checkpointing: bool | None = field(
        default=None,
        metadata=_help("Recompute activations in backward to save memory.", nargs="?", const=True),
    )
    activation_checkpointing_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata=_help("Options for activation checkpointing (a dict or JSON string).")
    )
    gradient_checkpointing: bool | None = field(
        default=None, metadata=_help("Deprecated: use activation_checkpointing.", nargs="?", const=True)
    )
    gradient_checkpointing_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata=_help("Deprecated: use activation_checkpointing_kwargs.")
    )

    # --- Compilation and kernels ---
    torch_compile: bool = field(default=False, metadata=_help("Compile the model with torch.compile."))
    torch_compile_backend: str | None = field(
        default=None, metadata=_help("torch.compile backend; setting it turns torch_compile on.")
    )
    torch_compile_mode: str | None = field(
        default=None, metadata=_help("torch.compile mode; setting it turns torch_compile on.")
    )
    use_liger_kernel: bool = field(default=False, metadata=_help("Patch the model with Liger kernels."))
    liger_kernel_config: dict[str, bool] | None = field(default=None, metadata=_help("Liger kernel options."))
    use_cache: bool = field(default=False, metadata=_help("Keep the model's KV cache on during training."))
    neftune_noise_alpha: float | None = field(default=None, metadata=_help("NEFTune embedding noise."))
    torch_empty_cache_steps: PositiveInt | None = field(
        default=None, metadata=_help("Empty the accelerator cache every N steps.")
    )
    auto_find_batch_size: bool = field(
        default=False, metadata=_help("Halve the batch size and retry after an out-of-memory error.")
    )

    # --- Logging ---
    logging_strategy: IntervalStrategy = field(default=IntervalStrategy.STEPS, metadata=_help("When to log."))
    logging_steps: float = field(
        default=500, metadata=_help("Log every N steps; a float below 1 is a ratio of the total steps.")
    )
    logging_first_step: bool = field(default=False, metadata=_help("Also log the first step."))
    log_on_each_node: bool = field(default=True, metadata=_help("Log from each node's main process."))
    logging_nan_inf_filter: bool = field(
        default=True, metadata=_help("Leave NaN/Inf step losses out of the logged loss.")
    )
    include_num_input_tokens_seen: str | bool = field(
        default="no", metadata=_help("Count input tokens: 'all', 'non_padding' or 'no' (True/False allowed).")
    )
    log_level: LogLevel = field(default="passive", metadata=_help("Log level of the main process."))
    log_level_replica: LogLevel = field(default="warning", metadata=_help("Log level of other processes."))
    disable_tqdm: bool | None = field(
        default=None, metadata=_help("Hide progress bars (default: when logging is quieter than WARNING).")
    )

    # --- Experiment tracking ---
    report_to: None | str | list[str] = field(  # noqa: RUF036
        default="none", metadata=_help("Integrations to report to: 'none', 'all', a name or a list.")
    )
    run_name: str | None = field(default=None, metadata=_help("Run name shown by trackers."))
    project: str = field(default="huggingface", metadata=_help("Project name (Trackio)."))
    trackio_space_id: str | None = field(default=None, metadata=_help("Trackio Space id."))
    trackio_bucket_id: str | None = field(default=None, metadata=_help("Trackio Bucket id."))
    trackio_static_space_id: str | None | Literal[False] = field(  # noqa: RUF036
        default=None, metadata=_help("Static Trackio Space id, or False for none.")
    )

    # --- Evaluation ---
    eval_strategy: IntervalStrategy = field(default=IntervalStrategy.NO, metadata=_help("When to evaluate."))
    eval_steps: float | None = field(
        default=None, metadata=_help("Evaluate every N steps (default: logging_steps); below 1, a ratio.")
    )
    eval_delay: float = field(default=0, metadata=_help("No evaluation before this many steps or epochs."))
    per_device_eval_batch_size: PositiveInt = field(default=8, metadata=_help("Evaluation batch per device."))
    prediction_loss_only: bool = field(default=False, metadata=_help("Evaluation returns only the loss."))
    eval_on_start: bool = field(default=False, metadata=_help("Evaluate once before the first step."))
    eval_do_concat_batches: bool = field(
        default=True, metadata=_help("Concatenate evaluation outputs across batches (else keep a list).")
    )
    eval_use_gather_object: bool = field(
        default=False, metadata=_help("Gather arbitrary objects from all processes during evaluation.")
    )
    eval_accumulation_steps: PositiveInt | None = field(
        default=None, metadata=_help("Move evaluation outputs to CPU every N batches.")
    )
    include_for_metrics: list[str] = field(
        default_factory=list, metadata=_help("Extra inputs for compute_metrics: 'inputs', 'loss'.")
    )
    batch_eval_metrics: bool = field(default=False, metadata=_help("Compute metrics batch by batch."))

    # --- Checkpoints ---
    save_only_model: bool = field(
        default=False, metadata=_help("Save weights only (no optimizer, scheduler or RNG): not resumable.")
    )
    save_strategy: SaveStrategy = field(default=SaveStrategy.STEPS, metadata=_help("When to save."))
    save_steps: float = field(
        default=500, metadata=_help("Save every N steps; a float below 1 is a ratio of the total steps.")
    )
    save_on_each_node: bool = field(default=False, metadata=_help("Save on every node, not only the first."))
    save_total_limit: int | None = field(
        default=None, metadata=_help("Keep at most N checkpoints (the newest and the best are kept).")
    )
    enable_jit_checkpoint: bool = field(default=False, metadata=_help("Save a checkpoint on SIGTERM."))

    # --- Hub (accepted for compatibility) ---
    push_to_hub: bool = field(default=False, metadata=_help("Push saved models to the Hub."))
    hub_token: str | None = field(default=None, metadata=_help("Hub token."))
    hub_private_repo: bool | None = field(default=None, metadata=_help("Make the Hub repository private."))
    hub_model_id: str | None = field(default=None, metadata=_help("Hub repository to push to."))
    hub_strategy: HubStrategy = field(default=HubStrategy.EVERY_SAVE, metadata=_help("What to push, when."))
    hub_always_push: bool = field(default=False, metadata=_help("Push even if the last push is unfinished."))
    hub_revision: str | None = field(default=None, metadata=_help("Hub revision to push to."))

    # --- Best model ---
    load_best_model_at_end: bool = field(default=False, metadata=_help("Reload the best checkpoint at end."))
    metric_for_best_model: str | None = field(
        default=None, metadata=_help("Metric that defines 'best' (default 'loss' when needed).")
    )
    greater_is_better: bool | None = field(
        default=None, metadata=_help("Larger metric is better (default: unless the name ends in 'loss').")
    )

    # --- Resume and reproducibility ---
    ignore_data_skip: bool = field(default=False, metadata=_help("On resume, do not skip seen batches."))
    restore_callback_states_from_checkpoint: bool = field(
        default=False, metadata=_help("On resume, restore the state of stateful callbacks.")
    )
    full_determinism: bool = field(default=False, metadata=_help("Use deterministic algorithms (slower)."))
    seed: int = field(default=42, metadata=_help("Seed set at the start of training."))
    data_seed: int | None = field(default=None, metadata=_help("Seed for data samplers (default: seed)."))

    # --- Hardware and accelerate ---
    use_cpu: bool = field(default=False, metadata=_help("Train on CPU even if an accelerator is present."))
    accelerator_config: Annotated[
        AcceleratorConfig | str | dict[str, Any] | None, BeforeValidator(_accelerator_config_input)
    ] = field(default=None, metadata=_help("accelerate settings: a dict, a JSON string or a JSON file path."))
    parallelism_config: Any = field(default=None, metadata=_help("accelerate ParallelismConfig."))

    # --- Data loading ---
    dataloader_drop_last: bool = field(default=False, metadata=_help("Drop the last incomplete batch."))
    dataloader_num_workers: NonNegativeInt = field(
        default=0, metadata=_help("DataLoader worker processes (0: load in the main process).")
    )
    dataloader_pin_memory: bool = field(default=True, metadata=_help("Pin DataLoader memory."))
    dataloader_persistent_workers: bool = field(
        default=False, metadata=_help("Keep DataLoader workers alive between epochs.")
    )
    dataloader_prefetch_factor: PositiveInt | None = field(
        default=None, metadata=_help("Batches each worker loads ahead.")
    )
    dataloader_multiprocessing_context: Literal["fork", "spawn", "forkserver"] | None = field(
        default=None, metadata=_help("Start method of DataLoader workers.")
    )
    dataloader_in_order: bool = field(default=True, metadata=_help("Yield batches in dispatch order."))
    remove_unused_columns: bool = field(
        default=True, metadata=_help("Drop dataset columns the model's forward does not take.")
    )
    label_names: list[str] | None = field(default=None, metadata=_help("Batch keys that hold labels."))
    train_sampling_strategy: SamplingStrategy = field(default="random", metadata=_help("Training sampler."))
    length_column_name: str = field(
        default="length", metadata=_help("Column of precomputed lengths for length-aware sampling.")
    )

    # --- Distributed ---
    ddp_find_unused_parameters: bool | None = field(
        default=None, metadata=_help("DDP find_unused_parameters.")
    )
    ddp_bucket_cap_mb: int | None = field(default=None, metadata=_help("DDP bucket_cap_mb."))
    ddp_broadcast_buffers: bool | None = field(default=None, metadata=_help("DDP broadcast_buffers."))
    ddp_static_graph: bool | None = field(default=None, metadata=_help("DDP static_graph."))
    ddp_backend: DdpBackend | None = field(default=None, metadata=_help("torch.distributed backend."))
    ddp_timeout: int = field(default=1800, metadata=_help("Process-group timeout in seconds."))
    fsdp: Annotated[str | None, PlainValidator(_fsdp_value)] = field(
        default=None, metadata=_help("Enable FSDP (True, or legacy option words).", nargs="?", const=True)
    )
    fsdp_config: dict[str, Any] | str | None = field(
        default=None, metadata=_help("FSDP settings: a dict, a JSON string or a JSON file path.")
    )
    deepspeed: dict[str, Any] | str | None = field(
        default=None, metadata=_help("DeepSpeed config: a dict, a JSON string or a JSON file path.")
    )

    # --- Debugging ---
    debug: Annotated[str | list[DebugOption], BeforeValidator(_none_to_empty)] = field(
        default="", metadata=_help("Debug features, space separated.")
    )
    skip_memory_metrics: bool = field(default=True, metadata=_help("Skip memory profiling in metrics."))

    # --- Flags for scripts (the Trainer ignores them) ---
    do_train: bool = field(default=False, metadata=_help("Script flag: run training."))
    do_eval: bool = field(default=False, metadata=_help("Script flag: run evaluation."))
    do_predict: bool = field(default=False, metadata=_help("Script flag: run prediction."))
    resume_from_checkpoint: PathStr | None = field(
        default=None, metadata=_help("Script flag: checkpoint folder to resume from.")
    )
    local_rank: int = field(default=-1, metadata=_help("Set by old launchers; read local_process_index."))

    # --- transformers 4.x names: accepted with a FutureWarning, folded into the fields above ---
    evaluation_strategy: IntervalStrategy | None = field(
        default=None, metadata=_help("Deprecated: eval_strategy.")
    )
    no_cuda: bool | None = field(default=None, metadata=_help("Deprecated: use_cpu.", nargs="?", const=True))
    per_gpu_train_batch_size: PositiveInt | None = field(
        default=None, metadata=_help("Deprecated: per_device_train_batch_size.")
    )
    per_gpu_eval_batch_size: PositiveInt | None = field(
        default=None, metadata=_help("Deprecated: per_device_eval_batch_size.")
    )
    warmup_ratio: NonNegativeFloat | None = field(
        default=None, metadata=_help("Deprecated: pass the ratio as warmup_steps (a float below 1).")
    )
    group_by_length: bool | None = field(
        default=None,
        metadata=_help("Deprecated: train_sampling_strategy='group_by_length'.", nargs="?", const=True),
    )
    include_inputs_for_metrics: bool | None = field(
        default=None, metadata=_help("Deprecated: include_for_metrics=['inputs'].", nargs="?", const=True)
    )
    overwrite_output_dir: bool | None = field(
        default=None, metadata=_help("Removed in transformers 5; has no effect.", nargs="?", const=True)
    )
    logging_dir: PathStr | None = field(
        default=None, metadata=_help("Removed in transformers 5; use the TENSORBOARD_LOGGING_DIR variable.")
    )
    save_safetensors: bool | None = field(
        default=None, metadata=_help("Removed in transformers 5; always safetensors.", nargs="?", const=True)
    )
    jit_mode_eval: bool | None = field(
        default=None, metadata=_help("Removed in transformers 5; has no effect.", nargs="?", const=True)
    )
    use_mps_device: bool | None = field(
        default=None, metadata=_help("Removed in transformers 5; MPS is automatic.", nargs="?", const=True)
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

    # ------------------------------------------------------------------ device and processes

    def _runtime(self) -> RuntimeInfo:
        """The accelerate-backed process facts, resolved on first use and again if use_cpu/ddp change."""
        config = self.accelerator_config
        settings = RuntimeSettings(
            use_cpu=self.use_cpu,
            ddp_backend=self.ddp_backend,
            ddp_timeout=self.ddp_timeout,
            use_configured_state=isinstance(config, AcceleratorConfig) and config.use_configured_state,
        )
        cached: RuntimeInfo | None = self.__dict__.get("_runtime_info")
        if cached is None or cached.settings != settings:
            cached = resolve_runtime(settings)
            self.__dict__["_runtime_info"] = cached
        return cached

    @property
    def distributed_state(self) -> Any:
        """accelerate's ``PartialState`` for this process."""
        return self._runtime().state

    @property
    def device(self) -> torch.device:
        """The device this process computes on."""
        return self._runtime().device

    @property
    def n_gpu(self) -> int:
        """GPUs this process drives: above 1 only for one process over several GPUs, 0 on CPU."""
        return self._runtime().n_gpu

    @property
    def parallel_mode(self) -> ParallelMode:
        """Whether the run is single-device, one process over several GPUs, or several processes."""
        return self._runtime().parallel_mode

    @property
    def world_size(self) -> int:
        """Number of processes in the run."""
        return int(self._runtime().state.num_processes)

    @property
    def process_index(self) -> int:
        """Global rank of this process."""
        return int(self._runtime().state.process_index)

    @property
    def local_process_index(self) -> int:
        """Rank of this process on its node."""
        return int(self._runtime().state.local_process_index)

    @property
    def train_batch_size(self) -> int:
        """Samples per forward pass of this process (HF counts every GPU a single process drives)."""
        return self.per_device_train_batch_size * max(1, self.n_gpu)

    @property
    def eval_batch_size(self) -> int:
        """Evaluation samples per forward pass of this process."""
        return self.per_device_eval_batch_size * max(1, self.n_gpu)

    @property
    def should_log(self) -> bool:
        """Whether this process logs: the main process of each node, or of the whole run."""
        return (self.local_process_index if self.log_on_each_node else self.process_index) == 0

    @property
    def should_save(self) -> bool:
        """Whether this process writes checkpoints: the main process of each node, or of the run."""
        return (self.local_process_index if self.save_on_each_node else self.process_index) == 0

    @property
    def mixed_precision(self) -> str:
        """'fp16', 'bf16', or what ACCELERATE_MIXED_PRECISION says (default 'no')."""
        if self.fp16:
            return "fp16"
        if self.bf16:
            return "bf16"
        return os.environ.get("ACCELERATE_MIXED_PRECISION", "no")

    @property
    def ddp_timeout_delta(self) -> timedelta:
        """``ddp_timeout`` as the timedelta torch.distributed expects."""
        return timedelta(seconds=self.ddp_timeout)

    @property
    def place_model_on_device(self) -> bool | None:
        """HF hook for integrations; None lets the Trainer decide."""
        return None

    def get_process_log_level(self) -> int:
        """The ``logging`` level this process should use; 'passive' keeps statetrain's current level."""
        main, replica = LOG_LEVELS[self.log_level], LOG_LEVELS[self.log_level_replica]
        current = logging.getLogger("statetrain").getEffectiveLevel()
        chosen = main if self.should_log else replica
        return current if chosen == -1 else chosen

    @contextlib.contextmanager
    def main_process_first(self, local: bool = True, desc: str = "work") -> Iterator[None]:
        """Run the block on the main process (of the node when ``local``) before the others.

        Typical use: preprocess a dataset once and let the other processes read the cache.
        """
        del desc  # kept for HF signature compatibility
        if self.world_size <= 1:
            yield
            return
        state = self.distributed_state
        with state.local_main_process_first() if local else state.main_process_first():
            yield

    def get_warmup_steps(self, num_training_steps: int) -> int:
        """Warm-up length: ``warmup_steps`` when at least 1, else that ratio of the steps, rounded up."""
        if self.warmup_steps >= 1:
            return int(self.warmup_steps)
        return math.ceil(num_training_steps * self.warmup_steps)

    # ------------------------------------------------------------------ introspection and serialisation

    def non_default_fields(self) -> dict[str, Any]:
        """Fields whose value differs from a default-built instance, by name.

        The Trainer uses it to refuse arguments it does not implement, naming them. Values the
        post-init derives from a changed field (e.g. ``do_eval`` from ``eval_strategy``) appear
        too; the deprecated 4.x names never do, their effect shows under the new name.
        """
        reference = _default_values(type(self))
        skip = set(DEPRECATED_NAMES)
        changed: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if not f.init or f.name in skip:
                continue
            value = getattr(self, f.name)
            if f.name not in reference or value != reference[f.name]:
                changed[f.name] = value
        return changed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the fields, HF-style: enums as values, ``*_token`` masked.

        The deprecated 4.x names are left out (they are always None after construction), except
        ``gradient_checkpointing*``, which transformers 5.24 still lists.
        """
        removed = RETIRED_OR_RENAMED
        result: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.init and f.name not in removed:
                result[f.name] = _plain(f.name, getattr(self, f.name))
        return result

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

    def __getstate__(self) -> dict[str, Any]:
        """Pickle and deepcopy without the process state, which belongs to this process only."""
        state = dict(self.__dict__)
        state.pop("_runtime_info", None)
        return state


def _plain(name: str, value: Any) -> Any:
    """One field value as to_dict shows it."""
    if name.endswith("_token"):
        return f"<{name.upper()}>"
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list) and value and isinstance(value[0], Enum):
        return [item.value for item in value]
    if isinstance(value, AcceleratorConfig):
        return value.to_dict()
    if name == "parallelism_config" and value is not None and hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, dict):
        return _dtypes_as_str(value)
    return value


def _dtypes_as_str(mapping: dict[str, Any]) -> dict[str, Any]:
    """Copy a (nested) dict with any non-string ``dtype`` entry turned into its short name."""
    copied: dict[str, Any] = {}
    for key, item in mapping.items():
        if isinstance(item, dict):
            item = _dtypes_as_str(item)
        elif key == "dtype" and item is not None and not isinstance(item, str):
            item = str(item).rsplit(".", 1)[-1]
        copied[key] = item
    return copied


def _default_values(cls: type[TrainingArguments]) -> dict[str, Any]:
    """The field values of ``cls()``, or the declared defaults when ``cls`` has required fields."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            instance = cls()
        return {f.name: getattr(instance, f.name) for f in dataclasses.fields(instance)}
    except (TypeError, ValueError):
        defaults: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                defaults[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                defaults[f.name] = f.default_factory()
        return defaults


def _restore_declared_field_types(cls: type) -> None:
    """Put the declared (Annotated) types back on the dataclass fields of ``cls``'s bases.

    ``HfArgumentParser`` assigns simplified types to ``Field.type`` of the class it parses, and
    pydantic reads ``Field.type`` when it builds a subclass.
    """
    for base in cls.__mro__[1:]:
        own = vars(base).get("__annotations__", {})
        fields = vars(base).get("__dataclass_fields__")
        if not own or not fields:
            continue
        hints = typing.get_type_hints(base, include_extras=True)
        for name in own:
            if name in fields and name in hints:
                fields[name].type = hints[name]
