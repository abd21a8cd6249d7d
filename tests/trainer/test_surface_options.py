"""Issue 3 surface checks not covered elsewhere: accumulation over micro-batches padded to different
widths, ``average_tokens_across_devices``, out-of-memory in the middle of a window, ``model_init``
per ``train()`` call, ``seed``, and the cached signature columns."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from statetrain import Trainer, TrainingArguments
from statetrain.optim.loss import WindowWeights
from tests.helpers import TinyRegressor, TokenModel, regression_rows, token_rows
from tests.trainer.test_accumulation_equivalence import VOCAB, PlainCausalModel, PlainTokenModel
from tests.trainer.test_batch_size_search import MemoryBoundRegressor


def options(tmp_path: Path, **overrides: Any) -> TrainingArguments:
    values: dict[str, Any] = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
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
    )
    values.update(overrides)
    return TrainingArguments(**values)


def params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def max_difference(a: nn.Module, b: nn.Module) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters(), strict=True))


# --- accumulation over micro-batches padded to their own longest row ----------------------------------


def pad_to_longest(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Right-pads each micro-batch to its own longest row: the widths differ from one micro-batch to the next."""
    longest = max(len(f["input_ids"]) for f in features)
    ids = torch.zeros(len(features), longest, dtype=torch.long)
    labels = torch.full((len(features), longest), -100, dtype=torch.long)
    for row, feature in enumerate(features):
        ids[row, : len(feature["input_ids"])] = torch.tensor(feature["input_ids"])
        labels[row, : len(feature["labels"])] = torch.tensor(feature["labels"])
    return {"input_ids": ids, "labels": labels}


def ragged_rows(lengths: list[int], valid: list[int], seed: int) -> list[dict[str, Any]]:
    """Rows of their own length; the first ``valid`` labels carry a loss (at least 2: one survives a shift)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for length, keep in zip(lengths, valid, strict=True):
        labels = torch.randint(0, 5, (length,), generator=g)
        labels[min(keep, length) :] = -100
        rows.append({"input_ids": torch.randint(1, VOCAB, (length,), generator=g).tolist(), "labels": labels.tolist()})
    return rows


MODELS = {
    "kwargs": lambda: TokenModel(vocab=VOCAB, classes=VOCAB),
    "plain": PlainTokenModel,
    "causal": PlainCausalModel,
}


def train_sequentially(model: nn.Module, rows: list[Any], out: Path, batch: int, accumulation: int) -> Trainer:
    trainer = Trainer(
        model=copy.deepcopy(model),
        args=options(out, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation),
        train_dataset=rows,
        data_collator=pad_to_longest,
    )
    trainer.train()
    return trainer


@pytest.mark.parametrize("kind", sorted(MODELS))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=st.integers(1, 3),
    accumulation=st.integers(2, 4),
    windows=st.integers(1, 2),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_accumulation_equals_the_full_batch_when_micro_batches_pad_to_different_widths(
    tmp_path: Path, kind: str, batch: int, accumulation: int, windows: int, data: Any, seed: int
) -> None:
    n = batch * accumulation * windows  # every window full
    lengths = data.draw(st.lists(st.integers(2, 12), min_size=n, max_size=n), label="lengths")
    valid = data.draw(st.lists(st.integers(2, 12), min_size=n, max_size=n), label="valid labels")
    rows = ragged_rows(lengths, valid, seed)
    torch.manual_seed(seed)
    model = MODELS[kind]()
    full = train_sequentially(model, rows, tmp_path / "full", batch * accumulation, 1)
    accumulated = train_sequentially(model, rows, tmp_path / "accumulated", batch, accumulation)
    assert max_difference(full.model, accumulated.model) <= 1e-6
    full_losses = [e["loss"] for e in full.state.log_history if "loss" in e]
    accumulated_losses = [e["loss"] for e in accumulated.state.log_history if "loss" in e]
    assert full_losses == pytest.approx(accumulated_losses, abs=1e-6)


# --- average_tokens_across_devices (two processes simulated; real ones are the distribution issue's) ----


def window() -> list[dict[str, torch.Tensor]]:
    return [
        {
            "input_ids": torch.zeros(2, 4, dtype=torch.long),
            "labels": torch.tensor([[1, 2, -100, -100], [3, -100, -100, -100]]),
        },
        {"input_ids": torch.zeros(1, 4, dtype=torch.long), "labels": torch.tensor([[1, 2, 3, 4]])},
    ]


@pytest.mark.parametrize("average", [True, False])
def test_num_items_in_batch_is_summed_across_processes_only_when_averaging(tmp_path: Path, average: bool) -> None:
    trainer = Trainer(model=TokenModel(), args=options(tmp_path, average_tokens_across_devices=average))
    trainer._world_size = 2
    gathered: list[torch.Tensor] = []

    def gather(value: torch.Tensor) -> torch.Tensor:  # the other process holds 10 items
        gathered.append(value)
        return torch.stack([value, torch.tensor(10)])

    trainer.accelerator.gather = gather  # type: ignore[method-assign]
    count = trainer._get_num_items_in_batch(window(), torch.device("cpu"))
    assert int(count) == (7 + 10 if average else 7)
    assert len(gathered) == (1 if average else 0)


def test_loss_is_scaled_by_the_process_count_when_items_are_summed_across_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HF: with the global count as divisor, DDP's gradient mean needs each loss multiplied by the world size."""
    batch = window()[1]
    losses = {}
    for average in (True, False):
        trainer = Trainer(model=TokenModel(), args=options(tmp_path, average_tokens_across_devices=average))
        monkeypatch.setattr(type(trainer.accelerator), "num_processes", property(lambda self: 2))
        losses[average] = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=torch.tensor(8))
        monkeypatch.undo()
    assert torch.allclose(losses[True], 2 * losses[False])


def test_item_weights_of_a_model_without_loss_kwargs_use_the_global_count() -> None:
    spans = SimpleNamespace(num_processes=2, gather=lambda t: torch.cat([t, torch.tensor([9.0], dtype=t.dtype)]))
    batches = window()
    weights = WindowWeights.of(batches, [torch.tensor(3), torch.tensor(4)], "cpu", spans=spans)
    # shares of the 16 items of both processes, times 2 because DDP averages the two gradients
    assert weights.share_of(batches[0]).item() == pytest.approx(2 * 3 / 16)  # type: ignore[union-attr]
    assert weights.share_of(batches[1]).item() == pytest.approx(2 * 4 / 16)  # type: ignore[union-attr]


# --- auto_find_batch_size: out of memory in the middle of a window -----------------------------------


def test_out_of_memory_mid_window_restarts_without_the_windows_gradients(tmp_path: Path) -> None:
    """GA 2: step 1 is done and the first micro-batch of step 2 has been backpropagated when memory runs
    out. The retry must keep neither that gradient nor step 1's update, Adam moments or schedule."""
    model = MemoryBoundRegressor(limit=6, from_call=4)
    reference = copy.deepcopy(model)
    common: dict[str, Any] = dict(
        gradient_accumulation_steps=2, optim="adamw_torch", learning_rate=0.05, lr_scheduler_type="linear", max_steps=3
    )
    trainer = Trainer(
        model=model,
        args=options(tmp_path / "search", per_device_train_batch_size=8, auto_find_batch_size=True, **common),
        train_dataset=regression_rows(64),
    )
    trainer.train()
    assert model.batch_sizes[:3] == [8, 8, 8] and trainer.state.train_batch_size == 6
    reference.from_call = 10**9
    direct = Trainer(
        model=reference,
        args=options(tmp_path / "direct", per_device_train_batch_size=6, **common),
        train_dataset=regression_rows(64),
    )
    direct.train()
    assert [e for e in trainer.state.log_history if "loss" in e] == [e for e in direct.state.log_history if "loss" in e]
    for name, value in params(reference).items():
        assert torch.equal(params(model)[name], value), name
    raw = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    assert {int(s["step"]) for s in raw.state.values()} == {3}  # the failed attempt's step is gone


# --- model_init and seed ---------------------------------------------------------------------------


def test_model_init_builds_a_fresh_model_and_optimizer_for_every_train_call(tmp_path: Path) -> None:
    built: list[nn.Module] = []

    def init() -> nn.Module:
        built.append(TinyRegressor())
        return built[-1]

    trainer = Trainer(model_init=init, args=options(tmp_path, max_steps=3), train_dataset=regression_rows(16))
    trainer.train()
    first_model, first = trainer.model, params(trainer.model)
    trainer.train()
    assert len(built) == 3 and trainer.model is built[2] and trainer.model is not first_model
    # a fresh model from the same seed trains to the same weights; reusing the trained one would not
    for name, value in first.items():
        assert torch.equal(params(trainer.model)[name], value), name
    raw = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    optimized = {id(p) for group in raw.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in trainer.model.parameters()}


def test_seed_decides_the_initial_weights_model_init_builds(tmp_path: Path) -> None:
    def weights(seed: int) -> dict[str, torch.Tensor]:
        trainer = Trainer(model_init=lambda: TinyRegressor(), args=options(tmp_path, seed=seed, max_steps=1))
        return params(trainer.model)

    same, again, other = weights(1), weights(1), weights(2)
    assert all(torch.equal(same[n], again[n]) for n in same)
    assert any(not torch.equal(same[n], other[n]) for n in same)


# --- remove_unused_columns: the signature is read once ---------------------------------------------


def test_signature_columns_are_computed_once_per_trainer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from statetrain.trainer import training_data as trainer_module

    calls: list[Any] = []
    real = trainer_module.signature_columns

    def counting(model: Any, label_names: Any) -> list[str]:
        calls.append(model)
        return real(model, label_names)

    monkeypatch.setattr(trainer_module, "signature_columns", counting)
    rows = [{**row, "note": "dropped"} for row in token_rows(8)]
    trainer = Trainer(
        model=TokenModel(),
        args=options(tmp_path, max_steps=2, eval_strategy="steps", eval_steps=1),
        train_dataset=rows,
        eval_dataset=rows[:4],
    )
    trainer.train()
    trainer.train()
    assert len(calls) == 1
