"""Hypothesis strategies for property-testing training loops.

* :func:`training_configs` draws small :class:`TrainingConfig` values (data size, batch size,
  accumulation, epochs or ``max_steps``, logging / evaluation / save cadences); each builds its
  :class:`~statetrain.TrainingArguments` with :meth:`TrainingConfig.training_arguments`.
* :func:`control_flag_schedules` draws which ``TrainerControl`` flag to set at which step.
* :func:`metric_sequences` draws evaluation metrics with many ties and plateaus, the values that
  decide early stopping.
* :func:`interruption_points` draws the steps at which a run is cut and resumed.

Everything is sized so that a run takes milliseconds on a CPU and shrinks to a readable example.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from statetrain.args.training_args import TrainingArguments
from statetrain.testing.flags import CONTROL_FLAGS, FlagSetting

__all__ = [
    "TrainingConfig",
    "control_flag_schedules",
    "interruption_points",
    "metric_sequences",
    "training_configs",
]

INTERVALS: tuple[str, ...] = ("no", "steps", "epoch")


@dataclass(frozen=True)
class TrainingConfig:
    """A small, complete description of a training run; hashable, printable, shrinkable.

    Exactly one of ``epochs`` and ``max_steps`` decides the length (``max_steps`` wins, as in HF);
    ``iterable`` serves the rows as an ``IterableDataset`` without a length, which needs
    ``max_steps``. ``eval_size`` 0 means no evaluation set.
    """

    train_size: int = 8
    batch_size: int = 2
    accumulation: int = 1
    epochs: int | None = 1
    max_steps: int | None = None
    iterable: bool = False
    eval_size: int = 0
    logging_strategy: str = "steps"
    logging_steps: int = 1
    eval_strategy: str = "no"
    eval_steps: int = 1
    save_strategy: str = "no"
    save_steps: int = 1
    save_total_limit: int | None = None
    learning_rate: float = 0.05
    dropout: float = 0.0
    seed: int = 7

    def __post_init__(self) -> None:
        if self.max_steps is None and self.epochs is None:
            raise ValueError("TrainingConfig needs epochs or max_steps")
        if self.iterable and self.max_steps is None:
            raise ValueError("an iterable dataset has no length, so TrainingConfig needs max_steps")
        if self.eval_strategy != "no" and self.eval_size < 1:
            raise ValueError(f"eval_strategy={self.eval_strategy!r} needs eval_size >= 1")
        for name in ("logging_strategy", "eval_strategy", "save_strategy"):
            if getattr(self, name) not in INTERVALS:
                raise ValueError(f"{name} must be one of {INTERVALS}, got {getattr(self, name)!r}")

    # --- what the configuration implies -------------------------------------------------------
    @property
    def micro_batches_per_epoch(self) -> int:
        """Micro-batches in one pass over the training rows."""
        return math.ceil(self.train_size / self.batch_size)

    @property
    def windows_per_epoch(self) -> int:
        """Optimizer steps per full pass (the last window may be short)."""
        return math.ceil(self.micro_batches_per_epoch / self.accumulation)

    @property
    def total_steps(self) -> int:
        """Optimizer steps of an uninterrupted run that nothing stops early."""
        if self.max_steps is not None:
            return self.max_steps
        assert self.epochs is not None
        return self.windows_per_epoch * self.epochs

    def replace(self, **changes: Any) -> TrainingConfig:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    def training_arguments(self, output_dir: str, **overrides: Any) -> TrainingArguments:
        """The ``TrainingArguments`` of this configuration; ``overrides`` win.

        CPU only, quiet, no integrations, and ``restore_callback_states_from_checkpoint=True`` so
        that a callback exporting its state (``ExportableState``) continues after a resume.
        """
        kwargs: dict[str, Any] = {
            "per_device_train_batch_size": self.batch_size,
            "per_device_eval_batch_size": 4,
            "gradient_accumulation_steps": self.accumulation,
            "num_train_epochs": self.epochs or 1,
            "max_steps": self.max_steps if self.max_steps is not None else -1,
            "logging_strategy": self.logging_strategy,
            "logging_steps": self.logging_steps,
            "eval_strategy": self.eval_strategy,
            "eval_steps": self.eval_steps,
            "save_strategy": self.save_strategy,
            "save_steps": self.save_steps,
            "save_total_limit": self.save_total_limit,
            "learning_rate": self.learning_rate,
            "seed": self.seed,
            "use_cpu": True,
            "disable_tqdm": True,
            "report_to": "none",
            "dataloader_num_workers": 0,
            "restore_callback_states_from_checkpoint": True,
        }
        kwargs.update(overrides)
        return TrainingArguments(output_dir, **kwargs)


@st.composite
def training_configs(
    draw: st.DrawFn,
    *,
    max_total_steps: int = 8,
    max_train_size: int = 12,
    with_eval: bool | None = None,
    iterable: bool | None = None,
    dropout: bool | None = None,
    strategies: bool = True,
) -> TrainingConfig:
    """Small training configurations whose runs take at most ``max_total_steps`` optimizer steps.

    ``with_eval``, ``iterable`` and ``dropout`` force a choice (``None``: drawn). With
    ``strategies=False`` logging, evaluation and saving keep their quiet defaults (a step log, no
    evaluation or save), for tests that only care about the step arithmetic. Shrinks towards one
    epoch of a few full windows, no evaluation, no saving.
    """
    train_size = draw(st.integers(1, max_train_size))
    batch_size = draw(st.integers(1, 4))
    accumulation = draw(st.integers(1, 3))
    micro_batches = math.ceil(train_size / batch_size)
    use_iterable = draw(st.booleans()) if iterable is None else iterable
    # a pass of an iterable dataset that is not a whole number of windows ends with a short window,
    # which takes its own optimizer step (docs/differences.md 18): drawn like any other case
    windows = math.ceil(micro_batches / accumulation)
    epochs: int | None = None
    max_steps: int | None = None
    if use_iterable or windows > max_total_steps or draw(st.booleans()):
        max_steps = draw(st.integers(1, max_total_steps))
    else:
        epochs = draw(st.integers(1, max(1, max_total_steps // windows)))
    has_eval = draw(st.booleans()) if with_eval is None else with_eval
    eval_size = draw(st.integers(1, 6)) if has_eval else 0
    config: dict[str, Any] = {}
    if strategies:
        config["logging_strategy"] = draw(st.sampled_from(INTERVALS[1:] + INTERVALS[:1]))
        config["logging_steps"] = draw(st.integers(1, 3))
        if has_eval:
            config["eval_strategy"] = draw(st.sampled_from(INTERVALS))
            config["eval_steps"] = draw(st.integers(1, 3))
        config["save_strategy"] = draw(st.sampled_from(INTERVALS))
        config["save_steps"] = draw(st.integers(1, 4))
        config["save_total_limit"] = draw(st.one_of(st.none(), st.integers(1, 2)))
    use_dropout = draw(st.booleans()) if dropout is None else dropout
    return TrainingConfig(
        train_size=train_size,
        batch_size=batch_size,
        accumulation=accumulation,
        epochs=epochs,
        max_steps=max_steps,
        iterable=use_iterable,
        eval_size=eval_size,
        dropout=0.25 if use_dropout else 0.0,
        **config,
    )


def control_flag_schedules(
    max_steps: int,
    *,
    flags: tuple[str, ...] = CONTROL_FLAGS,
    events: tuple[str, ...] = ("on_step_end",),
    max_size: int = 3,
) -> st.SearchStrategy[tuple[FlagSetting, ...]]:
    """Which ``TrainerControl`` flag to set at which step (1..``max_steps``) and event, sorted.

    Use with :class:`~statetrain.testing.flags.FlagScheduleCallback`. Shrinks towards no flags.
    """
    if max_steps < 1:
        return st.just(())
    setting = st.builds(
        FlagSetting,
        step=st.integers(1, max_steps),
        flag=st.sampled_from(flags),
        event=st.sampled_from(events),
    )
    return st.lists(setting, max_size=max_size, unique=True).map(lambda items: tuple(sorted(items)))


def metric_sequences(
    *,
    min_size: int = 1,
    max_size: int = 8,
    levels: int = 3,
) -> st.SearchStrategy[list[float]]:
    """Evaluation metric values with ties: mostly a few levels (0.0, 0.25, ...), sometimes any float.

    Ties and plateaus are where early-stopping rules differ (``>`` against ``>=``, the threshold),
    so most values come from ``levels + 1`` fixed levels. Shrinks towards all-equal values.
    """
    level = st.integers(0, levels).map(lambda i: i / 4)
    anything = st.floats(-10.0, 10.0, allow_nan=False, allow_infinity=False)
    return st.lists(st.one_of(level, anything), min_size=min_size, max_size=max_size)


def interruption_points(max_steps: int, *, max_points: int = 3) -> st.SearchStrategy[tuple[int, ...]]:
    """Sorted distinct steps in ``1..max_steps - 1`` at which a run is stopped and resumed."""
    if max_steps < 2:
        return st.just(())
    return st.lists(st.integers(1, max_steps - 1), max_size=max_points, unique=True).map(
        lambda points: tuple(sorted(points))
    )
