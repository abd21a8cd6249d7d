"""How ``TrainingArguments`` values are shown and compared: HF's ``to_dict`` values, default values,
and the declared field types that ``HfArgumentParser`` overwrites.
"""

from __future__ import annotations

import dataclasses
import typing
import warnings
from enum import Enum
from typing import TYPE_CHECKING, Any

from statetrain.args.accelerator_config import AcceleratorConfig
from statetrain.args.rules import declared_defaults

if TYPE_CHECKING:
    from statetrain.args.training_args import TrainingArguments


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
    if type(value).__name__ == "dtype" and type(value).__module__ == "torch":  # a subclass's dtype field
        return str(value).removeprefix("torch.")
    return value


def _dtypes_as_str(mapping: dict[str, Any]) -> dict[str, Any]:
    """Copy a (nested) dict with every non-string ``dtype`` entry turned into its short name."""
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
        return declared_defaults(cls)


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
        try:
            hints = typing.get_type_hints(base, include_extras=True)
        except NameError:  # a user base whose annotations name local types: leave it as it is
            continue
        for name in own:
            if name in fields and name in hints:
                fields[name].type = hints[name]
