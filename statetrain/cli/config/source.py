"""Reading a config file so every error can name the key and the line it came from.

PyYAML composes the document into nodes that carry their line; we record the line of every key
path, then build plain values. ``--set a.b=value`` overrides are parsed as YAML values and
remembered as coming from the command line. Validation errors from pydantic (the schema, and
``TrainingArguments``) are turned into ``file:line: key: message``, with did-you-mean for unknown keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from statetrain.args.names import closest_name
from statetrain.cli.config.schema import TrainConfig

KeyPath = tuple[str | int, ...]


class ConfigError(ValueError):
    """A config file that cannot be read, validated or built; the message names the key and line."""


class _Loader(yaml.SafeLoader):
    """YAML 1.1 with ``1e-5`` read as a float (PyYAML alone wants ``1.0e-5``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


@dataclass
class ConfigSource:
    """The file's values and where each key path was written (a line, or a ``--set``)."""

    path: Path
    data: dict[str, Any]
    lines: dict[KeyPath, int] = field(default_factory=dict)
    overrides: dict[KeyPath, str] = field(default_factory=dict)

    def where(self, key: KeyPath) -> str:
        """``file:line`` (or ``--set ...``) of ``key``, falling back to its nearest ancestor."""
        for end in range(len(key), 0, -1):
            prefix = key[:end]
            if prefix in self.overrides:
                return f"{self.path} (--set {self.overrides[prefix]})"
            if prefix in self.lines:
                return f"{self.path}:{self.lines[prefix]}"
        return str(self.path)

    def error(self, key: KeyPath, message: str) -> ConfigError:
        """A :class:`ConfigError` saying where ``key`` is and what is wrong with it."""
        dotted = ".".join(str(part) for part in key) or "(top level)"
        return ConfigError(f"{self.where(key)}: {dotted}: {message}")

    def resolve_path(self, value: str) -> Path:
        """A path from the file, taken relative to the file's folder unless absolute."""
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() else self.path.parent / candidate


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> tuple[TrainConfig, ConfigSource]:
    """Read, override and validate a config file; raises :class:`ConfigError` naming key and line."""
    source = read_source(Path(path))
    for item in overrides:
        apply_override(source, item)
    try:
        config = TrainConfig.model_validate(source.data)
    except ValidationError as exc:
        raise explain(exc, source, (), TrainConfig) from None
    return config, source


def read_source(path: Path) -> ConfigSource:
    """The YAML mapping at ``path`` and the line of every key in it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        line = f":{exc.problem_mark.line + 1}" if exc.problem_mark is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML: {exc.problem} ({exc.context or 'parsing'})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if node is None:
        raise ConfigError(f"{path}: the config file is empty")
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{path}:{node.start_mark.line + 1}: the config must be a mapping of sections")
    source = ConfigSource(path, {})
    _record_lines(node, (), source.lines)
    source.data = _Loader(text).get_single_data()
    return source


def _record_lines(node: yaml.Node, prefix: KeyPath, lines: dict[KeyPath, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*prefix, str(key_node.value))
            lines[key] = key_node.start_mark.line + 1
            _record_lines(value_node, key, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            key = (*prefix, index)
            lines[key] = item.start_mark.line + 1
            _record_lines(item, key, lines)


def apply_override(source: ConfigSource, item: str) -> None:
    """Apply one ``dotted.key=value`` (the value parsed as YAML) to ``source``."""
    dotted, sep, raw = item.partition("=")
    if not sep or not dotted:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. args.learning_rate=3e-4")
    try:
        value = yaml.load(raw, Loader=_Loader) if raw else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML: {exc}") from exc
    parts = dotted.split(".")
    target = source.data
    for depth, part in enumerate(parts[:-1]):
        child = target.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: {'.'.join(parts[: depth + 1])} is not a mapping")
        target = child
    target[parts[-1]] = value
    source.overrides[tuple(parts)] = item


def explain(exc: ValidationError, source: ConfigSource, prefix: KeyPath, model: type[BaseModel] | None) -> ConfigError:
    """One :class:`ConfigError` listing every problem pydantic found, each with its key and line."""
    problems = []
    for error in exc.errors():
        key = prefix + tuple(part for part in error["loc"] if isinstance(part, (str, int)))
        if error["type"] == "extra_forbidden":
            problems.append(str(source.error(key, "unknown key" + _suggestion(key, model))))
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            head, *items = message.split("\n- ")  # TrainingArguments lists each broken rule on its own line
            for item in items or [head]:
                problems.append(str(source.error(_mentioned(key, item, source), item)))
    return ConfigError("\n".join(problems))


def _suggestion(key: KeyPath, model: type[BaseModel] | None) -> str:
    """``; did you mean 'x'?`` from the fields of the section that holds ``key``."""
    owner = model
    for part in key[:-1]:
        if owner is None or isinstance(part, int):
            continue
        info = owner.model_fields.get(str(part))
        owner = _model_in(info.annotation) if info else None
    if owner is None:
        return ""
    guess = closest_name(str(key[-1]), owner.model_fields)
    return f"; did you mean {guess!r}?" if guess else f"; expected one of {', '.join(owner.model_fields)}"


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``X | None`` or ``list[X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _mentioned(key: KeyPath, message: str, source: ConfigSource) -> KeyPath:
    """For an error about a whole section, the key of it that the message names first."""
    children = [k for k in _keys_under(key, source.lines.keys() | source.overrides.keys()) if len(k) == len(key) + 1]
    found = []
    for child in children:
        match = re.search(rf"(?<![\w.]){re.escape(str(child[-1]))}(?!\w)", message)
        if match:
            found.append((match.start(), child))
    return min(found)[1] if found else key


def _keys_under(key: KeyPath, keys: Iterable[KeyPath]) -> list[KeyPath]:
    return [k for k in keys if k[: len(key)] == key and len(k) > len(key)]
