"""The HF callback protocol: ``TrainerCallback`` with one no-op method per HF event.

Subclass and override only what you need: the bus registers just the methods a class defines, so
the no-op defaults cost nothing at dispatch. ``ExportableState`` is HF's protocol for callbacks
whose state goes into checkpoints (as plain JSON, never pickle).
"""

from __future__ import annotations

from typing import Any, TypeVar

from statetrain.events.bus import NOOP_MARKER
from statetrain.events.event import HF_EVENTS

T = TypeVar("T", bound="ExportableState")


class ExportableState:
    """A callback whose ``state()`` is saved in checkpoints and rebuilt by ``from_state``."""

    def state(self) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement state()")

    @classmethod
    def from_state(cls: type[T], state: dict[str, Any]) -> T:
        instance = cls(**state["args"])
        for key, value in state.get("attributes", {}).items():
            setattr(instance, key, value)
        return instance


class TrainerCallback:
    """Base class of HF-style callbacks: ``on_<event>(args, state, control, **kwargs)``.

    Every call receives ``model``, ``processing_class``, ``optimizer``, ``lr_scheduler``,
    ``train_dataloader`` and ``eval_dataloader`` as keyword arguments, plus ``logs`` (on_log) or
    ``metrics`` (on_evaluate, on_predict). Return a ``TrainerControl`` to replace the control.
    Engine events (``on_before_forward``...) may be defined too; return a dict to replace payload.
    """


def _make_noop(name: str) -> Any:
    def method(self: Any, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        return None

    method.__name__ = name
    method.__qualname__ = f"TrainerCallback.{name}"
    method.__doc__ = f"Called on {name}; does nothing unless overridden."
    setattr(method, NOOP_MARKER, True)
    return method


for _event in HF_EVENTS:
    setattr(TrainerCallback, _event.value, _make_noop(_event.value))
del _event
