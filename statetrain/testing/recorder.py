"""A callback that records a run's HF events as ``(name, global_step, epoch)`` for the grammar checker."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from statetrain.callbacks.base import TrainerCallback
from statetrain.testing.grammar import HF_EVENT_NAMES

__all__ = ["TraceRecorder"]


class TraceRecorder(TrainerCallback):
    """HF-style callback recording every HF event as ``(name, global_step, epoch)`` into ``trace``.

    Works with statetrain's ``Trainer`` and with ``transformers.Trainer`` alike
    (``callbacks=[recorder]``). Several ``train()`` calls append to the same trace.
    """

    def __init__(self) -> None:
        self.trace: list[tuple[str, int, float]] = []

    def observe(self, name: str, state: Any, control: Any, kwargs: Mapping[str, Any]) -> None:
        """What every HF event method calls; a subclass that watches more than the trace overrides it."""
        self.record(name, state)

    def record(self, name: str, state: Any) -> None:
        epoch = state.epoch
        self.trace.append((name, int(state.global_step), float(epoch) if epoch is not None else 0.0))

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.trace]


def _recording_method(name: str) -> Any:
    def method(self: TraceRecorder, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.observe(name, state, control, kwargs)

    method.__name__ = name
    method.__qualname__ = f"TraceRecorder.{name}"
    method.__doc__ = f"Record {name}."
    return method


for _name in HF_EVENT_NAMES:
    setattr(TraceRecorder, _name, _recording_method(_name))
del _name
