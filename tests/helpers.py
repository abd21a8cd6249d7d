"""Tiny models and data shared by the tests (built in code; nothing downloaded)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from statetrain import TrainerCallback


class TinyRegressor(nn.Module):
    """MLP with an HF-style forward: ``{"loss", "logits"}``; no ``**kwargs``."""

    def __init__(self, d_in: int = 8, hidden: int = 16, d_out: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Dropout(dropout), nn.Linear(hidden, d_out))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        logits = self.net(x)
        out: dict[str, Any] = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


class TokenModel(nn.Module):
    """Per-token classifier that accepts the loss kwargs (``num_items_in_batch``) as HF models do."""

    def __init__(self, vocab: int = 16, hidden: int = 12, classes: int = 5) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, **kwargs: Any) -> dict[str, Any]:
        logits = self.head(torch.tanh(self.norm(self.embed(input_ids))))
        out: dict[str, Any] = {"logits": logits}
        if labels is not None:
            flat = nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
            )
            n = kwargs.get("num_items_in_batch")
            out["loss"] = flat / (n if n is not None else (labels != -100).sum())
        return out


def regression_rows(n: int, d_in: int = 8, classes: int = 4, seed: int = 0) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return [{"x": x[i], "labels": y[i]} for i in range(n)]


def token_rows(n: int, length: int = 10, vocab: int = 16, classes: int = 5, seed: int = 0) -> list[dict[str, Any]]:
    """Fixed-length rows whose valid label counts differ (the rest is -100), like padded text."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (length,), generator=g)
        labels = torch.randint(0, classes, (length,), generator=g)
        valid = int(torch.randint(1, length + 1, (1,), generator=g))
        labels[valid:] = -100
        rows.append({"input_ids": ids, "labels": labels})
    return rows


class RowStream(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
    """The rows as a stream with no length, the same rows in the same order on every pass."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def __iter__(self) -> Any:
        return iter(self.rows)


class StopAfter(TrainerCallback):
    """Ends training once ``global_step`` reaches ``step`` (a stop that writes no checkpoint of its own)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step >= self.step:
            control.should_training_stop = True
