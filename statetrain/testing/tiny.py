"""A tiny model and data for property tests: cheap enough that a train() call takes milliseconds.

Nothing is downloaded. Rows are generated from a seed, so two runs of one configuration see the
same data, which is what lets a harness compare an interrupted run with an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import IterableDataset

__all__ = ["RowStream", "TinyClassifier", "tiny_rows"]


class TinyClassifier(nn.Module):
    """A two-layer MLP with an HF-style forward returning ``{"loss", "logits"}``.

    ``dropout`` > 0 makes every step consume random numbers, so resuming must restore the RNG
    exactly for the parameters to match.
    """

    def __init__(self, d_in: int = 4, hidden: int = 8, classes: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Dropout(dropout), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        logits = self.net(x)
        out: dict[str, Any] = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


def tiny_rows(n: int, d_in: int = 4, classes: int = 3, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``n`` rows ``{"x": float vector, "labels": class index}`` drawn from ``seed`` alone."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return [{"x": x[i], "labels": y[i]} for i in range(n)]


class RowStream(IterableDataset):  # type: ignore[type-arg]
    """The same rows as an iterable dataset without a length (training then needs ``max_steps``)."""

    def __init__(self, rows: list[dict[str, torch.Tensor]]) -> None:
        self.rows = rows

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return iter(self.rows)
