"""The built-in example: a small classifier on scikit-learn's bundled handwritten digits.

Runs on CPU in seconds, through the full machine, and reports held-out accuracy. Nothing is
downloaded: the digits ship inside scikit-learn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
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


@torch.no_grad()
def accuracy(model: nn.Module, rows: list[dict[str, Any]]) -> float:
    model.eval()
    images = torch.stack([r["pixel_values"] for r in rows])
    labels = torch.tensor([r["label"] for r in rows])
    predictions = model(pixel_values=images)["logits"].argmax(-1)
    return float((predictions == labels).float().mean())


@dataclass
class DemoResult:
    accuracy: float
    first_loss: float
    last_loss: float
    train_loss: float
    output_dir: Path


def run_demo(
    output_dir: str | Path = "statetrain_demo_output",
    epochs: float = 8,
    disable_tqdm: bool = False,
    seed: int = 42,
) -> DemoResult:
    """Train the digits classifier through ``statetrain.Trainer``; write logs; return the outcome."""
    from statetrain import Trainer, TrainingArguments

    train_rows, test_rows = load_digits_splits()
    args = TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=epochs,
        per_device_train_batch_size=32,
        gradient_accumulation_steps=2,
        learning_rate=3e-3,
        warmup_steps=0.05,
        weight_decay=0.01,
        logging_steps=20,
        logging_first_step=True,
        save_strategy="no",
        seed=seed,
        disable_tqdm=disable_tqdm,
        use_cpu=True,
    )
    trainer = Trainer(model=DigitsClassifier(), args=args, train_dataset=train_rows)
    output = trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    result = DemoResult(
        accuracy=accuracy(trainer.model, test_rows),
        first_loss=losses[0],
        last_loss=losses[-1],
        train_loss=output.training_loss,
        output_dir=Path(output_dir),
    )
    result.output_dir.mkdir(parents=True, exist_ok=True)
    trainer.state.save_to_json(result.output_dir / "trainer_state.json")
    summary = {
        "held_out_accuracy": result.accuracy,
        "train_loss": result.train_loss,
        "first_logged_loss": result.first_loss,
        "last_logged_loss": result.last_loss,
        "global_step": output.global_step,
    }
    (result.output_dir / "demo_results.json").write_text(json.dumps(summary, indent=2) + "\n")
    return result
