"""The schema of a ``statetrain train`` config file, as pydantic models (printed by ``--print-schema``).

Every section forbids keys it does not know, so a typo fails with the key's line and a suggestion
instead of being ignored. ``args`` holds ``TrainingArguments`` fields as they are named there.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Reference(Section):
    """User code named by ``package.module:attribute``; a class or function is called with ``kwargs``."""

    factory: str = Field(description="package.module:attribute")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the call")


class ModelSection(Section):
    """``factory`` (any ``nn.Module`` factory), or a transformers ``auto_class`` + ``config`` or ``pretrained``."""

    factory: str | None = Field(None, description="package.module:attribute returning an nn.Module")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for factory")
    auto_class: str | None = Field(None, description="a transformers auto class, e.g. AutoModelForCausalLM")
    config: dict[str, Any] | None = Field(
        None, description="a transformers config as a dict with model_type (the model is built from it, untrained)"
    )
    pretrained: str | None = Field(None, description="a local folder written by save_pretrained")

    @model_validator(mode="after")
    def _one_source(self) -> ModelSection:
        if (self.factory is None) == (self.auto_class is None):
            raise ValueError("give exactly one of factory or auto_class")
        if self.auto_class is not None and (self.config is None) == (self.pretrained is None):
            raise ValueError("auto_class needs exactly one of config or pretrained")
        if self.factory is not None and (self.config is not None or self.pretrained is not None):
            raise ValueError("config and pretrained go with auto_class, not with factory")
        return self


class DataSource(Section):
    """A dataset: files or a ``save_to_disk`` folder read through ``datasets``, or a factory."""

    path: str | None = Field(None, description="a file, a glob, or a folder written by Dataset.save_to_disk")
    format: Literal["csv", "json", "parquet", "text", "disk"] | None = Field(
        None, description="how to read path (default: from its suffix; a folder is 'disk')"
    )
    split: str = Field("train", description="the split to take from a DatasetDict or a files builder")
    factory: str | None = Field(None, description="package.module:attribute returning a dataset or a list of rows")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for factory")
    limit: int | None = Field(None, ge=1, description="keep only the first rows")

    @model_validator(mode="after")
    def _one_source(self) -> DataSource:
        if (self.path is None) == (self.factory is None):
            raise ValueError("give exactly one of path or factory")
        return self


class TokenizeSection(Section):
    """Tokenize a text column with the tokenizer (needs ``tokenizer``); the other columns are dropped."""

    column: str = Field("text", description="the text column")
    max_length: int | None = Field(None, ge=1, description="truncate to this many tokens")


class DataSection(Section):
    train: DataSource | None = None
    eval: DataSource | None = None
    tokenize: TokenizeSection | None = None


class TokenizerSection(Section):
    """The tokenizer or processing class: a local folder, loaded with a transformers auto class."""

    path: str = Field(description="a local folder written by save_pretrained")
    auto_class: str = Field("AutoTokenizer", description="AutoTokenizer, AutoProcessor, AutoImageProcessor...")


class CollatorSection(Section):
    """A built-in collator by name, or a factory (a class is called with kwargs, a function is used as is)."""

    name: Literal["default", "padding", "language_modeling"] | None = Field(
        None, description="default (statetrain's), padding (DataCollatorWithPadding), language_modeling (causal LM)"
    )
    factory: str | None = Field(None, description="package.module:attribute")
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> CollatorSection:
        if (self.name is None) == (self.factory is None):
            raise ValueError("give exactly one of name or factory")
        return self


class TrainConfig(Section):
    """A whole ``statetrain train`` run. Relative paths are relative to the config file's folder."""

    seed: int | None = Field(None, description="set before the model is built (default: args.seed)")
    model: ModelSection
    data: DataSection
    tokenizer: TokenizerSection | None = None
    collator: CollatorSection | None = None
    metrics: str | None = Field(None, description="package.module:attribute of a compute_metrics function")
    callbacks: list[Reference] = Field(default_factory=list, description="TrainerCallback classes or instances")
    machine: str | None = Field(None, description="package.module:attribute of a MachineSpec or factory")
    args: dict[str, Any] = Field(default_factory=dict, description="TrainingArguments fields, named as there")

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        """``tokenizer: PATH``, ``collator: NAME`` and ``callbacks: [pkg.mod:Cls]`` as short forms."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("tokenizer"), str):
            data["tokenizer"] = {"path": data["tokenizer"]}
        collator = data.get("collator")
        if isinstance(collator, str):
            data["collator"] = {"factory": collator} if ":" in collator else {"name": collator}
        if isinstance(data.get("callbacks"), list):
            data["callbacks"] = [{"factory": c} if isinstance(c, str) else c for c in data["callbacks"]]
        return data


def config_json_schema() -> dict[str, Any]:
    """The config's JSON schema, with ``args`` described by ``TrainingArguments``' own schema."""
    from pydantic import TypeAdapter

    from statetrain.args.training_args import TrainingArguments

    schema = TrainConfig.model_json_schema()
    args_schema = TypeAdapter(TrainingArguments).json_schema()
    schema.setdefault("$defs", {}).update(args_schema.pop("$defs", {}))
    args_schema["required"] = [name for name in args_schema.get("required", []) if name != "output_dir"]
    schema["$defs"]["TrainingArguments"] = args_schema
    schema["properties"]["args"] = {
        "$ref": "#/$defs/TrainingArguments",
        "description": "TrainingArguments fields, named as there",
    }
    return schema
