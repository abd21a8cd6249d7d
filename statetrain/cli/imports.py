"""Loading ``package.module:attribute`` references, the one way every command names user code."""

from __future__ import annotations

import importlib
from typing import Any

from statetrain.engine.machine import MachineSpec


class ImportPathError(ValueError):
    """A ``package.module:attribute`` reference that is malformed or cannot be imported."""


def load_object(path: str, what: str = "object") -> Any:
    """The attribute named by ``package.module:attribute`` (dots after the colon walk attributes)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ImportPathError(f"{what} path {path!r} must look like package.module:attribute")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportPathError(f"cannot load {what} {path!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise ImportPathError(f"cannot load {what} {path!r}: {exc}") from exc
    return target


def load_machine(path: str | None) -> MachineSpec:
    """The default machine, or the one at ``package.module:attribute`` (a spec or a factory)."""
    if path is None:
        from statetrain.engine.default_machine import default_machine

        return default_machine()
    try:
        target = load_object(path, "machine")
    except ImportPathError as exc:
        raise SystemExit(str(exc)) from exc
    machine = target() if callable(target) and not isinstance(target, MachineSpec) else target
    if not isinstance(machine, MachineSpec):
        raise SystemExit(f"{path!r} is a {type(machine).__name__}, not a MachineSpec")
    return machine
