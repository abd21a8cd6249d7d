"""The ``accelerate.Accelerator`` built from the arguments, as the HF Trainer builds it."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import (
    DataLoaderConfiguration,
    DistributedDataParallelKwargs,
    DistributedType,
    GradientAccumulationPlugin,
)

from statetrain.distributed.plugins import build_deepspeed_plugin, build_fsdp_plugin, ddp_kwargs
from statetrain.distributed.processes import configure_process_logging
from statetrain.distributed.teardown import release_process_groups_at_exit


def _accelerator_config(args: Any) -> dict[str, Any]:
    config = getattr(args, "accelerator_config", None)
    if config is None:
        return {}
    if isinstance(config, dict):
        return dict(config)
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    return dict(vars(config))


def _needs_fresh_state(mixed_precision: str, deepspeed_plugin: Any) -> bool:
    """Whether accelerate's shared state, set up by an earlier Accelerator, must be rebuilt.

    accelerate keeps one ``AcceleratorState`` per process and refuses a second Accelerator with
    another precision; it also takes a DeepSpeed plugin only from the first. HF rebuilds the state
    for every ``TrainingArguments``; here it is rebuilt only when this Trainer needs something else,
    so notebooks and sweeps can make Trainers with different settings one after another.
    """
    shared = AcceleratorState._shared_state
    if not shared:
        return False
    if deepspeed_plugin is not None or shared.get("deepspeed_plugins") is not None:
        return True
    return str(getattr(shared.get("mixed_precision"), "value", shared.get("mixed_precision"))) != mixed_precision


@contextlib.contextmanager
def lomo_check_only_when_imported() -> Iterator[None]:
    """Keep ``Accelerator.prepare`` from importing ``lomo_optim`` only to ask whether the optimizer is
    one of its classes.

    accelerate imports it whenever it is installed, and ``lomo_optim`` imports transformers: seconds
    on the first ``train()`` of a process and a module scan on every later one. An optimizer can
    only be a LOMO optimizer if ``lomo_optim`` is already imported, so until then the check is
    answered "no" without the import; accelerate's own logic is untouched otherwise.
    """
    import accelerate.accelerator as accelerator_module

    if "lomo_optim" in sys.modules:
        yield
        return
    original = accelerator_module.is_lomo_available
    accelerator_module.is_lomo_available = lambda: False  # type: ignore[assignment]
    try:
        yield
    finally:
        accelerator_module.is_lomo_available = original


def build_accelerator(args: Any) -> Accelerator:
    """Mixed precision, CPU choice, HF's dataloader settings (seedable sampler, data_seed) and plugins.

    Gradient accumulation stays with the engine (accelerate's is set to one step), as in HF. FSDP,
    DeepSpeed and DDP options come from the arguments (see ``scaling``); accelerate turns FSDP on
    only for several GPU-like processes, and a run where it did not is warned about.
    """
    configure_process_logging(args)
    config = _accelerator_config(args)
    dataloader_config = DataLoaderConfiguration(
        split_batches=config.get("split_batches", False),
        dispatch_batches=config.get("dispatch_batches"),
        even_batches=config.get("even_batches", True),
        use_seedable_sampler=config.get("use_seedable_sampler", True),
        data_seed=args.data_seed,
        non_blocking=config.get("non_blocking", False),
    )
    mixed_precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "no"
    fsdp_plugin = build_fsdp_plugin(args)
    extra: dict[str, Any] = {}
    if getattr(args, "parallelism_config", None) is not None:
        extra["parallelism_config"] = args.parallelism_config  # accelerate checks it, as in HF
    deepspeed_plugin = build_deepspeed_plugin(args)
    if _needs_fresh_state(mixed_precision, deepspeed_plugin):
        AcceleratorState._reset_state(reset_partial_state=False)
    # accelerate marks the process as DeepSpeed for good when given a plugin; the mark is for the
    # state being built, so a later Trainer without deepspeed in this process gets none
    signalled = os.environ.get("ACCELERATE_USE_DEEPSPEED")
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        cpu=bool(getattr(args, "runs_on_cpu", args.use_cpu)),
        dataloader_config=dataloader_config,
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=1),
        fsdp_plugin=fsdp_plugin,
        deepspeed_plugin=deepspeed_plugin,
        kwargs_handlers=[DistributedDataParallelKwargs(**ddp_kwargs(args))],
        **extra,
    )
    release_process_groups_at_exit()  # when the run joined a process group
    if deepspeed_plugin is not None:
        if signalled is None:
            os.environ.pop("ACCELERATE_USE_DEEPSPEED", None)
        else:
            os.environ["ACCELERATE_USE_DEEPSPEED"] = signalled
    if fsdp_plugin is not None and accelerator.distributed_type != DistributedType.FSDP:
        warnings.warn(
            f"TrainingArguments.fsdp is set, but accelerate enables FSDP only for several GPU-like processes; "
            f"this run is {accelerator.distributed_type.value} with {accelerator.num_processes} process(es), so "
            "the model is not sharded",
            UserWarning,
            stacklevel=3,
        )
    return accelerator
