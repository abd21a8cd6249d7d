"""The ``accelerate.Accelerator`` built from the arguments, as the HF Trainer builds it."""

from __future__ import annotations

from typing import Any

from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, GradientAccumulationPlugin


def _accelerator_config(args: Any) -> dict[str, Any]:
    config = getattr(args, "accelerator_config", None)
    if config is None:
        return {}
    if isinstance(config, dict):
        return dict(config)
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    return dict(vars(config))


def build_accelerator(args: Any) -> Accelerator:
    """Mixed precision, CPU choice and HF's dataloader settings (seedable sampler, data_seed).

    Gradient accumulation stays with the engine (accelerate's is set to one step), as in HF.
    """
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
    return Accelerator(
        mixed_precision=mixed_precision,
        cpu=bool(getattr(args, "runs_on_cpu", args.use_cpu)),
        dataloader_config=dataloader_config,
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=1),
    )
