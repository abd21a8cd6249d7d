"""The annotated types ``TrainingArguments`` fields are declared with, and their small validators.

``HfArgumentParser`` reads field types through ``typing.get_type_hints`` without extras, so the
``Annotated`` parts below (bounds, coercions) reach pydantic but never the command line, which
sees the same plain types as transformers' own class.
"""

from __future__ import annotations

import os
import re
from importlib import metadata as importlib_metadata
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, PlainValidator

from statetrain.args.accelerator_config import AcceleratorConfig
from statetrain.args.enums import (
    LOG_LEVELS,
    DebugOption,
    FSDPOption,
    HubStrategy,
    IntervalStrategy,
    OptimizerNames,
    SaveStrategy,
    SchedulerType,
)


def help_text(text: str, **argparse_options: Any) -> dict[str, Any]:
    """Field metadata in the shape ``HfArgumentParser`` hands to ``argparse.add_argument``."""
    return {"help": text, **argparse_options}


def _fspath(value: Any) -> Any:
    """Accept ``pathlib.Path`` (and other path-likes) wherever a directory name is expected."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _none_to_empty(value: Any) -> Any:
    """``HfArgumentParser`` hands ``debug`` over as None when the flag is absent."""
    return "" if value is None else value


def _fsdp_value(value: Any) -> Any:
    """Accept what transformers accepts for ``fsdp``: None, a bool, or legacy option words."""
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


def default_optimizer() -> OptimizerNames:
    """transformers picks the fused AdamW from torch 2.8 on; read the version without importing torch."""
    try:
        version = importlib_metadata.version("torch")
    except importlib_metadata.PackageNotFoundError:
        return OptimizerNames.ADAMW_TORCH
    found = re.match(r"(\d+)\.(\d+)", version)
    if found and (int(found.group(1)), int(found.group(2))) >= (2, 8):
        return OptimizerNames.ADAMW_TORCH_FUSED
    return OptimizerNames.ADAMW_TORCH


def _one_of(*allowed: str) -> AfterValidator:
    """A check that a plain string is one of ``allowed`` (the CLI gets the same list as ``choices``)."""

    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"{value!r} is not one of {list(allowed)}")
        return value

    return AfterValidator(check)


LOG_LEVEL_CHOICES = tuple(LOG_LEVELS)
DDP_BACKEND_CHOICES = ("nccl", "gloo", "mpi", "xccl", "hccl", "cncl", "mccl")
SAMPLING_CHOICES = ("random", "sequential", "group_by_length", "batch_rebalance")
WORKER_START_CHOICES = ("fork", "spawn", "forkserver")

PathStr = Annotated[str, BeforeValidator(_fspath)]
Beta = Annotated[float, Field(ge=0.0, lt=1.0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
# Typed ``str`` like transformers (so a str variable type-checks), checked against the choices.
LogLevel = Annotated[str, _one_of(*LOG_LEVEL_CHOICES)]
DdpBackend = Annotated[str, _one_of(*DDP_BACKEND_CHOICES)]
SamplingStrategy = Annotated[str, _one_of(*SAMPLING_CHOICES)]
WorkerStart = Annotated[str, _one_of(*WORKER_START_CHOICES)]
# ``Enum | str`` like transformers, for type checkers; at run time always converted to the enum,
# whose error lists the valid values.
IntervalChoice = Annotated[IntervalStrategy | str, BeforeValidator(IntervalStrategy)]
SaveChoice = Annotated[SaveStrategy | str, BeforeValidator(SaveStrategy)]
HubChoice = Annotated[HubStrategy | str, BeforeValidator(HubStrategy)]
SchedulerChoice = Annotated[SchedulerType | str, BeforeValidator(SchedulerType)]
OptimizerChoice = Annotated[OptimizerNames | str, BeforeValidator(OptimizerNames)]
# transformers types fsdp as ``str | None`` (so the CLI takes words) but stores True/False too.
FsdpValue = Annotated[str | None, PlainValidator(_fsdp_value)]
DebugValue = Annotated[str | list[DebugOption], BeforeValidator(_none_to_empty)]
AcceleratorConfigValue = Annotated[
    AcceleratorConfig | str | dict[str, Any] | None, BeforeValidator(_accelerator_config_input)
]
