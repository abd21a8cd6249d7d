"""Gradient accumulation equals the full batch, for models with and without loss kwargs.

HF divides a model's per-micro-batch mean loss by the window length when the model cannot take
``num_items_in_batch`` (huggingface/transformers#37766); statetrain weights it by the
micro-batch's share of the window's label items instead (docs/differences.md). Per-device batch
``b * GA`` with accumulation 1 and batch ``b`` with accumulation ``GA`` must then train the same
parameters, on padded rows whose numbers of valid labels differ.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from statetrain import Trainer, TrainingArguments
from tests.helpers import TinyRegressor, TokenModel, regression_rows

VOCAB, CLASSES = 16, 5


class PlainTokenModel(nn.Module):
    """Per-token classifier whose forward has no ``**kwargs``: its loss is its own micro-batch mean."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = TokenModel(vocab=VOCAB, classes=CLASSES)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        logits = self.inner(input_ids)["logits"]
        out: dict[str, Any] = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits.reshape(-1, CLASSES), labels.reshape(-1))
        return out


class PlainCausalModel(nn.Module):
    """Next-token model without ``**kwargs`` whose loss shifts the labels, as HF causal LMs do."""

    loss_type = "ForCausalLM"

    def __init__(self) -> None:
        super().__init__()
        self.inner = TokenModel(vocab=VOCAB, classes=VOCAB)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        logits = self.inner(input_ids)["logits"]
        out: dict[str, Any] = {"logits": logits}
        if labels is not None:
            shifted = logits[:, :-1].reshape(-1, VOCAB)
            out["loss"] = nn.functional.cross_entropy(shifted, labels[:, 1:].reshape(-1))
        return out


MODELS = {"kwargs": TokenModel, "plain": PlainTokenModel, "plain_causal": PlainCausalModel}


def padded_rows(n: int, length: int, seed: int, classes: int) -> list[dict[str, Any]]:
    """Rows of one padded length; 2..length valid labels each (a causal shift leaves at least one)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        ids = torch.randint(0, VOCAB, (length,), generator=g)
        labels = torch.randint(0, classes, (length,), generator=g)
        labels[int(torch.randint(2, length + 1, (1,), generator=g)) :] = -100
        rows.append({"input_ids": ids, "labels": labels})
    return rows


def train(model: nn.Module, rows: list[Any], out: Path, batch: int, accumulation: int, **extra: Any) -> Trainer:
    args = TrainingArguments(
        str(out),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        optim="sgd",
        learning_rate=0.5,
        num_train_epochs=1,
        max_grad_norm=0.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=11,
        **extra,
    )
    trainer = Trainer(model=copy.deepcopy(model), args=args, train_dataset=rows)
    trainer.train()
    return trainer


def max_difference(a: Trainer, b: Trainer) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True))


def logged_losses(trainer: Trainer) -> list[float]:
    return [e["loss"] for e in trainer.state.log_history if "loss" in e]


@pytest.mark.parametrize("kind", sorted(MODELS))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=st.integers(1, 3),
    accumulation=st.integers(2, 4),
    windows=st.integers(1, 3),
    length=st.integers(3, 10),
    seed=st.integers(0, 2**16),
)
def test_accumulation_trains_like_the_full_batch(
    tmp_path: Path, kind: str, batch: int, accumulation: int, windows: int, length: int, seed: int
) -> None:
    torch.manual_seed(seed)
    model = MODELS[kind]()
    classes = VOCAB if kind == "plain_causal" else CLASSES
    rows = padded_rows(batch * accumulation * windows, length, seed, classes)  # fills every window
    full = train(model, rows, tmp_path / "full", batch * accumulation, 1)
    accumulated = train(model, rows, tmp_path / "accumulated", batch, accumulation)
    assert max_difference(full, accumulated) <= 1e-6
    assert logged_losses(full) == pytest.approx(logged_losses(accumulated), abs=1e-6)


def test_plain_model_differs_from_hf_where_hf_is_wrong(tmp_path: Path) -> None:
    """The same rows through ``transformers.Trainer``: HF's accumulated run drifts, ours does not."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = PlainTokenModel()
    rows = padded_rows(8, 10, seed=5, classes=CLASSES)
    full = train(model, rows, tmp_path / "full", 4, 1)
    ours = train(model, rows, tmp_path / "ours", 2, 2)
    hf = transformers.Trainer(
        model=copy.deepcopy(model),
        args=transformers.TrainingArguments(
            output_dir=str(tmp_path / "hf"),
            per_device_train_batch_size=2,
            gradient_accumulation_steps=2,
            optim="sgd",
            learning_rate=0.5,
            num_train_epochs=1,
            max_grad_norm=0.0,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
            seed=11,
        ),
        train_dataset=rows,
    )
    hf.train()
    assert max_difference(full, ours) <= 1e-6
    pairs = zip(full.model.parameters(), hf.model.parameters(), strict=True)
    assert max((p - q).abs().max().item() for p, q in pairs) > 1e-3


def test_short_last_micro_batch_is_weighted_by_its_items(tmp_path: Path) -> None:
    """One label per row: a window of 4 + 2 rows is the mean over 6 rows, not the mean of two means."""
    torch.manual_seed(0)
    model = TinyRegressor()
    rows = regression_rows(6, seed=3)
    full = train(model, rows, tmp_path / "full", 6, 1)
    accumulated = train(model, rows, tmp_path / "accumulated", 4, 2)
    assert max_difference(full, accumulated) <= 1e-6
    assert logged_losses(full) == pytest.approx(logged_losses(accumulated), abs=1e-6)


def test_label_smoothing_on_a_plain_model_accumulates_like_the_full_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = PlainTokenModel()
    rows = padded_rows(8, 9, seed=6, classes=CLASSES)
    full = train(model, rows, tmp_path / "full", 8, 1, label_smoothing_factor=0.2)
    accumulated = train(model, rows, tmp_path / "accumulated", 2, 4, label_smoothing_factor=0.2)
    assert max_difference(full, accumulated) <= 1e-6


class TargetModel(nn.Module):
    """Labels under another key: the items cannot be counted, so HF's ÷GA path must stay."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = TinyRegressor()

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> dict[str, Any]:
        return self.inner(x, labels=target)


def test_uncountable_labels_keep_hfs_division_by_the_window_length(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = TargetModel()
    rows = [{"x": r["x"], "target": r["labels"]} for r in regression_rows(6, seed=3)]
    options: dict[str, Any] = dict(
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        optim="sgd",
        learning_rate=0.5,
        num_train_epochs=1,
        max_grad_norm=0.0,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=11,
        label_names=["target"],
    )
    ours = Trainer(
        model=copy.deepcopy(model), args=TrainingArguments(str(tmp_path / "st"), **options), train_dataset=rows
    )
    ours.train()
    hf = transformers.Trainer(
        model=copy.deepcopy(model),
        args=transformers.TrainingArguments(output_dir=str(tmp_path / "hf"), **options),
        train_dataset=rows,
    )
    hf.train()
    for p, q in zip(ours.model.parameters(), hf.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6, rtol=0)


def test_loss_is_scaled_for_ga_overrides_the_weighting(tmp_path: Path) -> None:
    """A user who says how their loss is scaled gets HF's rule for it, not the item weights."""
    torch.manual_seed(0)
    model = TinyRegressor()
    rows = regression_rows(6, seed=3)
    full = train(model, rows, tmp_path / "full", 6, 1)
    args = TrainingArguments(
        str(tmp_path / "override"),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        optim="sgd",
        learning_rate=0.5,
        num_train_epochs=1,
        max_grad_norm=0.0,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=11,
    )
    trainer = Trainer(model=copy.deepcopy(model), args=args, train_dataset=rows)
    trainer.loss_is_scaled_for_ga = False
    trainer.train()
    assert max_difference(full, trainer) > 1e-3


def test_window_weights_are_shares_of_the_window_and_only_for_its_batches() -> None:
    from statetrain.optim.loss import WindowWeights

    batches = [{"labels": torch.tensor([1, -100])}, {"labels": torch.tensor([1, 2, 3])}]
    weights = WindowWeights.of(batches, [torch.tensor(1), torch.tensor(3)], "cpu")
    assert weights.share_of(batches[0]).item() == 0.25  # type: ignore[union-attr]
    assert weights.share_of(batches[1]).item() == 0.75  # type: ignore[union-attr]
    assert weights.share_of({"labels": torch.tensor([1, 2, 3])}) is None  # an equal batch from elsewhere
