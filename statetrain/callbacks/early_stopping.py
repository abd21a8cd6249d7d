"""EarlyStoppingCallback: stop training once the tracked metric stops improving (reference §3).

The decision rule is HF's. Each evaluation compares the metric with ``state.best_metric``, which
the Trainer only updates after every ``on_evaluate`` handler has returned, so the comparison is
with the best of the *earlier* evaluations. An evaluation improves when there is no best yet, or
when it is strictly better in the direction of ``greater_is_better`` by more than
``early_stopping_threshold``; otherwise the patience counter grows, and training stops when it
reaches ``early_stopping_patience``.

Differences from HF, all deliberate:

* misconfiguration raises ``ValueError`` naming the field (HF uses ``assert``, which ``python -O``
  strips), and the constructor validates its arguments;
* the Trainer keeps the counter in ``state.stateful_callbacks`` (rebuilt after every evaluation and
  before every checkpoint), so a resumed run continues counting by default (HF restores it only
  with ``restore_callback_states_from_checkpoint=True``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from statetrain.callbacks.base import ExportableState, TrainerCallback

logger = logging.getLogger(__name__)


def _choice(value: Any) -> str:
    """An enum-or-string option as its plain string value."""
    return str(getattr(value, "value", value))


class EarlyStoppingCallback(TrainerCallback, ExportableState):
    """Stops training after ``early_stopping_patience`` evaluations without enough improvement.

    Needs ``metric_for_best_model`` and an ``eval_strategy`` other than "no". A ``None``
    threshold (HF's signature allows it but then fails at the second evaluation) means 0.0.
    """

    def __init__(self, early_stopping_patience: int = 1, early_stopping_threshold: float | None = 0.0) -> None:
        if isinstance(early_stopping_patience, bool) or not isinstance(early_stopping_patience, int):
            raise TypeError(
                f"EarlyStoppingCallback: early_stopping_patience must be an int >= 1, got {early_stopping_patience!r}"
            )
        if early_stopping_patience < 1:
            raise ValueError(
                f"EarlyStoppingCallback: early_stopping_patience must be >= 1 (the number of evaluations "
                f"without improvement to tolerate), got {early_stopping_patience}"
            )
        threshold = 0.0 if early_stopping_threshold is None else early_stopping_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise TypeError(f"EarlyStoppingCallback: early_stopping_threshold must be a number >= 0, got {threshold!r}")
        if math.isnan(threshold) or threshold < 0:
            raise ValueError(
                f"EarlyStoppingCallback: early_stopping_threshold must be >= 0 (the margin an improvement "
                f"must exceed), got {threshold}"
            )
        self.early_stopping_patience = early_stopping_patience
        self.early_stopping_threshold = float(threshold)
        # How many evaluations in a row failed to improve on the best earlier one.
        self.early_stopping_patience_counter = 0

    # --- decision -----------------------------------------------------------------------------
    def check_metric_value(self, args: Any, state: Any, control: Any, metric_value: float) -> None:
        """Reset the counter on an improvement over ``state.best_metric``, else count one more miss."""
        best = state.best_metric
        if best is None:
            improved = True
        else:
            better = metric_value > best if args.greater_is_better else metric_value < best
            improved = bool(better) and abs(metric_value - best) > self.early_stopping_threshold
        if improved:
            self.early_stopping_patience_counter = 0
        else:
            self.early_stopping_patience_counter += 1

    # --- events -------------------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Fail early on a setup that could never stop; join the sibling group in dispatch order."""
        if args.metric_for_best_model is None:
            raise ValueError(
                "EarlyStoppingCallback requires TrainingArguments.metric_for_best_model to be set "
                "(the metric whose improvement it watches)"
            )
        if _choice(args.eval_strategy) == "no":
            raise ValueError(
                "EarlyStoppingCallback requires TrainingArguments.eval_strategy to be 'steps' or 'epoch'; "
                "with eval_strategy='no' there are no evaluations to stop on"
            )
        if not args.load_best_model_at_end:
            logger.warning(
                "EarlyStoppingCallback is used without load_best_model_at_end=True: when training stops, "
                "the final model is kept, not the best one."
            )

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        """Decide on this evaluation's metric and set ``should_training_stop`` when patience runs out."""
        name = args.metric_for_best_model
        if name is None:
            logger.warning("EarlyStoppingCallback: metric_for_best_model is not set; no early-stopping decision")
            return
        key = name if name.startswith("eval_") else f"eval_{name}"
        metrics = metrics or {}
        value = metrics.get(key)
        if value is None:
            logger.warning(
                "EarlyStoppingCallback: the evaluation metrics have no %r (metric_for_best_model=%r), so "
                "this evaluation decides nothing; available: %s",
                key,
                name,
                sorted(metrics),
            )
            return
        self.check_metric_value(args, state, control, value)
        if self.early_stopping_patience_counter >= self.early_stopping_patience:
            control.should_training_stop = True

    def state(self) -> dict[str, Any]:
        """HF's ``ExportableState`` layout: constructor arguments and the counter."""
        return {
            "args": {
                "early_stopping_patience": self.early_stopping_patience,
                "early_stopping_threshold": self.early_stopping_threshold,
            },
            "attributes": {"early_stopping_patience_counter": self.early_stopping_patience_counter},
        }
