"""Turning a validated config into a ``Trainer``: each section built, each failure tied to its key.

The seed is set before the model is built, so a config run starts from the same weights every
time. Files are read only through ``datasets`` and ``transformers``' local loaders; nothing is
downloaded (``pretrained`` and ``tokenizer`` must be local folders).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from torch import nn

from statetrain.cli.config.schema import CollatorSection, DataSection, DataSource, ModelSection, TrainConfig
from statetrain.cli.config.source import ConfigError, ConfigSource, KeyPath, explain
from statetrain.cli.imports import ImportPathError, load_object
from statetrain.engine.machine import MachineSpec

SUFFIX_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}


def build_trainer(config: TrainConfig, source: ConfigSource) -> Any:
    """The ``Trainer`` the config describes, ready for ``train()``."""
    from statetrain import Trainer
    from statetrain.data.batches import set_seed

    args = build_args(config, source)
    set_seed(config.seed if config.seed is not None else args.seed)
    model = build_model(config.model, source)
    tokenizer = build_tokenizer(config, source)
    train_data = build_dataset(config.data, "train", tokenizer, source)
    eval_data = build_dataset(config.data, "eval", tokenizer, source)
    callbacks = [_call(ref.factory, ref.kwargs, ("callbacks", i), source) for i, ref in enumerate(config.callbacks)]
    return Trainer(
        model=model,
        args=args,
        data_collator=build_collator(config.collator, tokenizer, source),
        train_dataset=train_data,
        eval_dataset=eval_data,
        processing_class=tokenizer,
        compute_metrics=_load(config.metrics, ("metrics",), source) if config.metrics else None,
        callbacks=callbacks,
        machine=build_machine(config.machine, source),
    )


def build_args(config: TrainConfig, source: ConfigSource) -> Any:
    """``TrainingArguments(**config.args)``; a rejected field is reported with its line."""
    from statetrain.args.training_args import TrainingArguments

    try:
        return TrainingArguments(**config.args)
    except ValidationError as exc:
        raise explain(exc, source, ("args",), None) from None
    except (TypeError, ValueError) as exc:
        raise source.error(("args",), str(exc)) from None


def build_model(section: ModelSection, source: ConfigSource) -> nn.Module:
    """The model from a factory, or from a transformers auto class and a config dict or local folder."""
    if section.factory is not None:
        model = _call(section.factory, section.kwargs, ("model", "factory"), source)
    else:
        model = _auto_model(section, source)
    if not isinstance(model, nn.Module):
        raise source.error(("model",), f"built a {type(model).__name__}, not a torch.nn.Module")
    return model


def _auto_model(section: ModelSection, source: ConfigSource) -> Any:
    auto = _transformers_attr(str(section.auto_class), ("model", "auto_class"), source)
    try:
        if section.pretrained is not None:
            folder = _existing(section.pretrained, ("model", "pretrained"), source)
            return auto.from_pretrained(str(folder), local_files_only=True)
        from transformers import AutoConfig

        settings = dict(section.config or {})
        model_type = settings.pop("model_type", None)
        if model_type is None:
            raise source.error(("model", "config"), "needs model_type (e.g. gpt2, bert, llama)")
        return auto.from_config(AutoConfig.for_model(model_type, **settings))
    except ConfigError:
        raise
    except (OSError, ValueError, TypeError, KeyError) as exc:
        key: KeyPath = ("model", "pretrained") if section.pretrained is not None else ("model", "config")
        raise source.error(key, f"{section.auto_class} could not build the model: {exc}") from exc


def build_tokenizer(config: TrainConfig, source: ConfigSource) -> Any:
    """The tokenizer or processor from a local folder, or None."""
    if config.tokenizer is None:
        return None
    auto = _transformers_attr(config.tokenizer.auto_class, ("tokenizer", "auto_class"), source)
    folder = _existing(config.tokenizer.path, ("tokenizer", "path"), source)
    try:
        return auto.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise source.error(("tokenizer", "path"), f"{config.tokenizer.auto_class} cannot load {folder}: {exc}") from exc


def build_collator(section: CollatorSection | None, tokenizer: Any, source: ConfigSource) -> Any:
    """None (the Trainer's default), a transformers collator by name, or user code."""
    if section is None or section.name == "default":
        return None
    if section.factory is not None:
        return _call(section.factory, section.kwargs, ("collator", "factory"), source)
    if tokenizer is None:
        raise source.error(("collator", "name"), f"the {section.name} collator needs a tokenizer section")
    import transformers

    try:
        if section.name == "padding":
            return transformers.DataCollatorWithPadding(tokenizer, **section.kwargs)
        return transformers.DataCollatorForLanguageModeling(tokenizer, **{"mlm": False, **section.kwargs})
    except (TypeError, ValueError) as exc:
        raise source.error(("collator",), str(exc)) from exc


def build_machine(path: str | None, source: ConfigSource) -> MachineSpec | None:
    """None (the default machine) or the ``MachineSpec`` at ``path`` (a spec or a factory)."""
    if path is None:
        return None
    target = _load(path, ("machine",), source)
    machine = target if isinstance(target, MachineSpec) else _call(path, {}, ("machine",), source)
    if not isinstance(machine, MachineSpec):
        raise source.error(("machine",), f"{path!r} gave a {type(machine).__name__}, not a MachineSpec")
    return machine


def build_dataset(section: DataSection, split: str, tokenizer: Any, source: ConfigSource) -> Any:
    """``data.<split>`` (``train`` or ``eval``) read, cut to ``limit`` and tokenized; None when absent."""
    spec: DataSource | None = getattr(section, split)
    if spec is None:
        return None
    key: KeyPath = ("data", split)
    data = _call(spec.factory, spec.kwargs, (*key, "factory"), source) if spec.factory else _read(spec, key, source)
    if spec.limit is not None:
        data = data.select(range(min(spec.limit, len(data)))) if hasattr(data, "select") else data[: spec.limit]
    if section.tokenize is not None:
        data = _tokenize(data, section, tokenizer, source)
    return data


def _read(spec: DataSource, key: KeyPath, source: ConfigSource) -> Any:
    import datasets

    path = source.resolve_path(str(spec.path))
    kind = spec.format or ("disk" if path.is_dir() else SUFFIX_FORMATS.get(path.suffix))
    if kind is None:
        raise source.error((*key, "path"), f"cannot tell the format of {path}; set format: csv|json|parquet|text|disk")
    try:
        if kind == "disk":
            data = datasets.load_from_disk(str(path))
            if isinstance(data, datasets.DatasetDict):
                if spec.split not in data:
                    raise source.error((*key, "split"), f"{path} has splits {sorted(data)}, not {spec.split!r}")
                data = data[spec.split]
            return data
        return datasets.load_dataset(kind, data_files=str(path), split=spec.split)
    except ConfigError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise source.error((*key, "path"), f"cannot read {path} as {kind}: {exc}") from exc


def _tokenize(data: Any, section: DataSection, tokenizer: Any, source: ConfigSource) -> Any:
    import datasets

    settings = section.tokenize
    assert settings is not None
    if tokenizer is None:
        raise source.error(("data", "tokenize"), "tokenizing needs a tokenizer section")
    if isinstance(data, list):
        data = datasets.Dataset.from_list(data)
    if settings.column not in data.column_names:
        raise source.error(("data", "tokenize", "column"), f"no column {settings.column!r} in {data.column_names}")
    data = data.filter(lambda row: bool(row[settings.column] and row[settings.column].strip()))
    options = {"truncation": True, "max_length": settings.max_length} if settings.max_length else {}
    return data.map(
        lambda batch: tokenizer(batch[settings.column], **options), batched=True, remove_columns=data.column_names
    )


def _call(path: str, kwargs: dict[str, Any], key: KeyPath, source: ConfigSource) -> Any:
    """The object at ``path``; a class or function is called with ``kwargs``, an instance is returned."""
    target = _load(path, key, source)
    if not (inspect.isclass(target) or inspect.isfunction(target) or inspect.ismethod(target)):
        if kwargs:
            raise source.error(key, f"{path!r} is not callable, so it takes no kwargs")
        return target
    try:
        return target(**kwargs)
    except (TypeError, ValueError) as exc:
        raise source.error(key, f"calling {path} failed: {exc}") from exc


def _load(path: str, key: KeyPath, source: ConfigSource) -> Any:
    try:
        return load_object(path, ".".join(str(p) for p in key))
    except ImportPathError as exc:
        raise source.error(key, str(exc)) from exc


def _transformers_attr(name: str, key: KeyPath, source: ConfigSource) -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise source.error(key, "needs transformers: pip install transformers") from exc
    if not name.startswith("Auto") or not hasattr(transformers, name):
        raise source.error(key, f"transformers has no auto class {name!r} (e.g. AutoModelForCausalLM)")
    return getattr(transformers, name)


def _existing(value: str, key: KeyPath, source: ConfigSource) -> Path:
    folder = source.resolve_path(value)
    if not folder.is_dir():
        raise source.error(key, f"{folder} is not a folder (only local folders are read; nothing is downloaded)")
    return folder
