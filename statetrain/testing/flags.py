"""Scheduled ``TrainerControl`` flags: set flag F at step S, the way a user callback would.

A schedule is data (a tuple of :class:`FlagSetting`), so the same schedule can drive an
interrupted run and its uninterrupted reference, and a property test can draw it
(:func:`statetrain.testing.strategies.control_flag_schedules`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from statetrain.callbacks.base import TrainerCallback

__all__ = ["CONTROL_FLAGS", "FLAG_EVENTS", "FlagScheduleCallback", "FlagSetting"]

CONTROL_FLAGS: tuple[str, ...] = (
    "should_log",
    "should_evaluate",
    "should_save",
    "should_epoch_stop",
    "should_training_stop",
)
"""The five ``TrainerControl`` flags a callback may set."""

FLAG_EVENTS: tuple[str, ...] = ("on_step_end", "on_epoch_end")
"""Where a scheduled flag is set: after step ``step``'s update, or at the epoch end reached at ``step``."""


@dataclass(frozen=True, order=True)
class FlagSetting:
    """Set ``flag`` at ``event`` when ``state.global_step == step`` (as a user callback would)."""

    step: int
    flag: str
    event: str = "on_step_end"

    def __post_init__(self) -> None:
        if self.flag not in CONTROL_FLAGS:
            raise ValueError(f"unknown TrainerControl flag {self.flag!r}; one of {CONTROL_FLAGS}")
        if self.event not in FLAG_EVENTS:
            raise ValueError(f"flags are scheduled at {FLAG_EVENTS}, not {self.event!r}")


class FlagScheduleCallback(TrainerCallback):
    """Sets the scheduled flags; ``settings`` may be a list that grows while training runs."""

    def __init__(self, settings: Iterable[FlagSetting] = ()) -> None:
        self.settings: list[FlagSetting] = settings if isinstance(settings, list) else list(settings)

    def _apply(self, event: str, state: Any, control: Any) -> None:
        for setting in self.settings:
            if setting.event == event and setting.step == state.global_step:
                setattr(control, setting.flag, True)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._apply("on_step_end", state, control)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._apply("on_epoch_end", state, control)

    def first_stop(self) -> int | None:
        """The first step whose ``on_step_end`` sets ``should_training_stop`` (that step ends training)."""
        steps = [s.step for s in self.settings if s.flag == "should_training_stop" and s.event == "on_step_end"]
        return min(steps) if steps else None
