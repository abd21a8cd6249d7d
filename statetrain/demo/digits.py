"""The built-in example: a small classifier on scikit-learn's bundled handwritten digits.

Runs on CPU in seconds, through the full machine, and reports held-out accuracy. Nothing is
downloaded: the digits ship inside scikit-learn. The pieces (model, splits, metric) are also what
``examples/configs/digits-mlp.yaml`` names, so ``statetrain train`` runs the same model from a file;
:mod:`statetrain.demo.run` is the preempt-and-resume story ``statetrain demo`` tells.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class DigitsClassifier(nn.Module):
    """An MLP over 8x8 digit images that returns ``{"loss", "logits"}`` like an HF model."""

    def __init__(self, hidden: int = 128, num_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        logits = self.net(pixel_values)
        out: dict[str, Any] = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


def load_digits_splits(seed: int = 0, test_fraction: float = 0.2) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train and held-out splits as lists of ``{"pixel_values", "label"}`` features, scaled to [0, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - exercised only without the demo extra
        raise SystemExit("the demo needs scikit-learn: pip install 'statetrain[demo]'") from exc
    digits = load_digits()
    images = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    targets = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    cut = int(len(images) * (1 - test_fraction))

    def rows(idx: torch.Tensor) -> list[dict[str, Any]]:
        return [{"pixel_values": images[i], "label": int(targets[i])} for i in idx.tolist()]

    return rows(order[:cut]), rows(order[cut:])


def digits_split(split: str = "train", seed: int = 0) -> list[dict[str, Any]]:
    """One split (``"train"`` or ``"test"``) of :func:`load_digits_splits`, for config files."""
    train_rows, test_rows = load_digits_splits(seed)
    if split not in ("train", "test"):
        raise ValueError(f"digits split must be 'train' or 'test', got {split!r}")
    return train_rows if split == "train" else test_rows


def digits_accuracy(prediction: Any) -> dict[str, float]:
    """``compute_metrics`` for the digits: the share of argmax predictions equal to the labels."""
    logits = torch.as_tensor(prediction.predictions)
    labels = torch.as_tensor(prediction.label_ids)
    return {"accuracy": float((logits.argmax(-1) == labels).float().mean())}


@torch.no_grad()
def accuracy(model: nn.Module, rows: list[dict[str, Any]]) -> float:
    model.eval()
    images = torch.stack([r["pixel_values"] for r in rows])
    labels = torch.tensor([r["label"] for r in rows])
    predictions = model(pixel_values=images)["logits"].argmax(-1)
    return float((predictions == labels).float().mean())
