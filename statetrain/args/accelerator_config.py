"""``AcceleratorConfig``: the accelerate settings ``TrainingArguments.accelerator_config`` carries.

Same fields and defaults as transformers 5.24's ``trainer_pt_utils.AcceleratorConfig``, validated
by pydantic, so a typo in a JSON config file fails with the key's name instead of being ignored.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import field
from typing import Any

from pydantic import ConfigDict, model_validator
from pydantic.dataclasses import dataclass
from pydantic_core import ArgsKwargs

from statetrain.args.names import unknown_names_message


@dataclass(config=ConfigDict(extra="forbid"))
class AcceleratorConfig:
    """Settings handed to ``accelerate.Accelerator`` (mostly about how data is split across processes)."""

    split_batches: bool = field(
        default=False,
        metadata={"help": "Split each loaded batch across processes instead of loading one per process."},
    )
    dispatch_batches: bool | None = field(
        default=None,
        metadata={"help": "Load batches on the main process only and send slices to the others."},
    )
    even_batches: bool = field(
        default=True,
        metadata={"help": "Repeat samples from the start so every process gets a full last batch."},
    )
    use_seedable_sampler: bool = field(
        default=True,
        metadata={"help": "Use accelerate's seedable sampler so the data order follows the seed and epoch."},
    )
    non_blocking: bool = field(
        default=False,
        metadata={"help": "Move prepared batches to the device with non-blocking copies."},
    )
    gradient_accumulation_kwargs: dict[str, Any] | None = field(
        default=None,
        metadata={"help": "Options for accelerate's GradientAccumulationPlugin: num_steps, sync_each_batch."},
    )
    use_configured_state: bool = field(
        default=False,
        metadata={"help": "Reuse an accelerate state the caller set up before the arguments were built."},
    )

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        """Name a misspelt key and its likely fix, rather than pydantic's bare 'unexpected argument'."""
        given = (data.kwargs or {}) if isinstance(data, ArgsKwargs) else data
        if isinstance(given, dict):
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = set(given) - known
            if unknown:
                raise ValueError(unknown_names_message("accelerator_config", unknown, known))
        return data

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike[str]) -> AcceleratorConfig:
        """Read the settings from a JSON object in ``json_file``; unknown keys are an error."""
        with open(json_file, encoding="utf-8") as handle:
            loaded = json.load(handle)
        if not isinstance(loaded, dict):
            raise ValueError(f"accelerator_config file {os.fspath(json_file)!r} must hold a JSON object")
        return cls(**loaded)

    @classmethod
    def coerce(cls, value: Any) -> AcceleratorConfig:
        """Build from None, a dict, a path to a JSON file, or any object carrying the same fields."""
        if isinstance(value, cls):
            return value
        if value is None:
            return cls()
        if isinstance(value, dict):
            return cls(**value)
        if isinstance(value, (str, os.PathLike)):
            return cls.from_json_file(value)
        if isinstance(value, type):
            raise ValueError(
                "accelerator_config got the class "
                f"{value.__name__}; pass an instance such as {value.__name__}() or a dict"
            )
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return cls(**dataclasses.asdict(value))
        to_dict = getattr(value, "to_dict", None)
        if callable(to_dict):
            return cls(**to_dict())
        raise ValueError(
            f"accelerator_config must be None, a dict, a JSON file path or an AcceleratorConfig, "
            f"got {type(value).__name__}"
        )

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the settings as a plain dict (JSON-ready)."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)}
