"""The values evaluation hands around, with HF's names and shapes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple


class EvalPrediction:
    """What ``compute_metrics`` receives: predictions, label ids, and optionally inputs and losses.

    Unpacks like HF's: ``predictions, labels = eval_pred`` (inputs and losses follow when present).
    """

    def __init__(self, predictions: Any, label_ids: Any, inputs: Any = None, losses: Any = None) -> None:
        self.predictions = predictions
        self.label_ids = label_ids
        self.inputs = inputs
        self.losses = losses
        self._elements = tuple(
            x for i, x in enumerate((predictions, label_ids, inputs, losses)) if i < 2 or x is not None
        )

    def __iter__(self) -> Iterator[Any]:
        return iter(self._elements)

    def __getitem__(self, index: int) -> Any:
        return self._elements[index]

    def __len__(self) -> int:
        return len(self._elements)


class EvalLoopOutput(NamedTuple):
    predictions: Any
    label_ids: Any
    metrics: dict[str, float] | None
    num_samples: int | None


class PredictionOutput(NamedTuple):
    predictions: Any
    label_ids: Any
    metrics: dict[str, float] | None
