"""Iterable training data with ``state_dict()``: its position travels with checkpoints.

A resume puts such a dataset back with ``load_state_dict`` (it never re-reads what the checkpoint
had consumed) and ends bit-identical to an uninterrupted run; an iterable dataset without it is
fast-forwarded without firing any callback event; with dataloader workers the position cannot be
saved, which a warning says, and the run falls back to the fast-forward.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from statetrain import Trainer, TrainerCallback, TrainingArguments
from statetrain.checkpoint.store import CheckpointWriteError, verify_checkpoint
from tests.helpers import RowStream, StopAfter, TinyRegressor, regression_rows

ROWS = 11  # batch 2 -> 6 micro-batches a pass (the last holds 1 row); accumulation 2 -> 3 steps a pass


class CursorStream(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
    """Rows read through a cursor it can save and restore; counts every row it reads."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.cursor = 0
        self.reads = 0
        self.loaded: list[dict[str, Any]] = []

    def __iter__(self) -> Any:
        while self.cursor < len(self.rows):
            row = self.rows[self.cursor]
            self.cursor += 1
            self.reads += 1
            yield row
        self.cursor = 0  # the next pass starts over

    def state_dict(self) -> dict[str, Any]:
        return {"cursor": self.cursor, "seen": torch.tensor([self.reads])}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loaded.append(state)
        self.cursor = int(state["cursor"])


class EventLog(TrainerCallback):
    """Every per-step callback event, with the step it fired at."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.events.append(("on_step_begin", state.global_step))

    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.events.append(("on_substep_end", state.global_step))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.events.append(("on_step_end", state.global_step))

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.events.append(("on_save", state.global_step))


def build(out: Path, data: Any, save_steps: int, callbacks: list[Any] | None = None, **extra: Any) -> Trainer:
    torch.manual_seed(3)
    args = TrainingArguments(
        str(out),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        max_steps=8,
        learning_rate=0.05,
        save_strategy="steps",
        save_steps=save_steps,
        logging_steps=1,
        use_cpu=True,
        disable_tqdm=True,
        report_to="none",
        seed=11,
        **extra,
    )
    return Trainer(model=TinyRegressor(dropout=0.3), args=args, train_dataset=data, callbacks=callbacks)


def untimed(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if not k.endswith(("runtime", "per_second"))} for e in history]


def optimizer_tensors(trainer: Trainer) -> list[torch.Tensor]:
    raw = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    return [t for s in raw.state.values() for t in s.values() if isinstance(t, torch.Tensor)]


def assert_same_run(a: Trainer, b: Trainer) -> None:
    assert a.state.global_step == b.state.global_step
    for x, y in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(x, y)
    for x, y in zip(optimizer_tensors(a), optimizer_tensors(b), strict=True):
        assert torch.equal(x, y)
    assert untimed(a.state.log_history) == untimed(b.state.log_history)


# k: mid-pass (2 -> batch 4 of pass 1; 4 -> batch 2 of pass 2; 7 -> batch 2 of pass 3) and the
# last step of a pass (3), where the dataset has drawn every row but the pass has not ended, with
# a short last batch (11 rows) and with a full one (12 rows: only the loader knows it was the last)
@pytest.mark.parametrize(("k", "n"), [(2, ROWS), (3, ROWS), (4, ROWS), (7, ROWS), (3, 12)])
def test_resume_restores_the_dataset_through_load_state_dict_bit_exactly(tmp_path: Path, k: int, n: int) -> None:
    rows = regression_rows(n, seed=5)
    full_data = CursorStream(rows)
    full = build(tmp_path / "full", full_data, save_steps=100)
    full.train()

    build(tmp_path / "cut", CursorStream(rows), save_steps=k, callbacks=[StopAfter(k)]).train()
    checkpoint = tmp_path / "cut" / f"checkpoint-{k}"
    manifest = verify_checkpoint(checkpoint)
    assert {"extra-train_dataset.json", "extra-train_dataset.safetensors"} <= set(manifest["files"])
    assert not [name for name in manifest["files"] if name.endswith((".pt", ".pth", ".bin", ".pkl"))]
    engine = json.loads((checkpoint / "engine_state.json").read_text())
    position = engine["batches_in_epoch"]
    consumed_rows = min(n, 2 * position)

    data = CursorStream(rows)
    resumed = build(tmp_path / "cut", data, save_steps=k)
    resumed.train(resume_from_checkpoint=str(checkpoint))

    if consumed_rows < n:
        assert len(data.loaded) == 1 and data.loaded[0]["cursor"] == consumed_rows  # put back, once
    else:  # the pass's short last batch was trained on: nothing is left of it, nothing to load
        assert data.loaded == []
    # nothing the checkpoint had consumed in its pass was read again; earlier passes are not replayed
    passes_before = engine["epoch_index"]
    assert data.reads == full_data.reads - passes_before * n - consumed_rows
    assert_same_run(full, resumed)


def test_fast_forward_of_plain_iterable_data_fires_no_events(tmp_path: Path) -> None:
    rows, k = regression_rows(ROWS, seed=6), 4
    full_log = EventLog()
    full = build(tmp_path / "full", RowStream(rows), save_steps=k, callbacks=[full_log])
    full.train()
    build(tmp_path / "cut", RowStream(rows), save_steps=k, callbacks=[StopAfter(k)]).train()
    resumed_log = EventLog()
    resumed = build(tmp_path / "cut", RowStream(rows), save_steps=k, callbacks=[resumed_log])
    resumed.train(resume_from_checkpoint=str(tmp_path / "cut" / f"checkpoint-{k}"))

    after_save = full_log.events[full_log.events.index(("on_save", k)) + 1 :]
    assert resumed_log.events == after_save  # the skipped batches fired nothing
    assert_same_run(full, resumed)


def test_with_dataloader_workers_the_position_is_not_saved_and_a_warning_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows, k = regression_rows(ROWS, seed=7), 4
    with caplog.at_level(logging.WARNING, logger="statetrain.checkpoint.dataset_position"):
        full = build(tmp_path / "full", CursorStream(rows), save_steps=100, dataloader_num_workers=2)
        full.train()
    assert "dataloader_num_workers=2" in caplog.text and "fast-forwards" in caplog.text
    build(
        tmp_path / "cut", CursorStream(rows), save_steps=k, callbacks=[StopAfter(k)], dataloader_num_workers=2
    ).train()
    stored = json.loads((tmp_path / "cut" / f"checkpoint-{k}" / "extra-train_dataset.json").read_text())
    assert '"batches"' in json.dumps(stored)

    data = CursorStream(rows)
    resumed = build(tmp_path / "cut", data, save_steps=k, dataloader_num_workers=2)
    resumed.train(resume_from_checkpoint=str(tmp_path / "cut" / f"checkpoint-{k}"))
    assert data.loaded == []  # fell back to the fast-forward
    assert_same_run(full, resumed)


def test_ignore_data_skip_starts_the_pass_afresh_without_loading_the_state(tmp_path: Path) -> None:
    rows, k = regression_rows(ROWS, seed=8), 4
    build(tmp_path / "cut", CursorStream(rows), save_steps=k, callbacks=[StopAfter(k)]).train()
    data = CursorStream(rows)
    resumed = build(tmp_path / "cut", data, save_steps=100, ignore_data_skip=True)
    resumed.train(resume_from_checkpoint=str(tmp_path / "cut" / f"checkpoint-{k}"))
    assert data.loaded == []
    assert resumed.state.global_step == 8


def test_a_dataset_state_that_is_not_json_or_tensors_fails_the_save_naming_it(tmp_path: Path) -> None:
    class Opaque(CursorStream):
        def state_dict(self) -> dict[str, Any]:
            return {"cursor": self.cursor, "handle": object()}

    trainer = build(tmp_path, Opaque(regression_rows(ROWS, seed=9)), save_steps=2)
    with pytest.raises(CheckpointWriteError, match=r"handle") as info:
        trainer.train()
    assert "train_dataset" in str(info.value)
    assert not (tmp_path / "checkpoint-2").exists()


@pytest.mark.parametrize("k", [2, 4])
def test_a_datasets_iterable_dataset_is_restored_through_its_state_dict(tmp_path: Path, k: int) -> None:
    """The common real case: ``datasets.IterableDataset`` (its state is nested dicts of ints)."""
    datasets = pytest.importorskip("datasets")
    plain = [{"x": r["x"].tolist(), "labels": int(r["labels"])} for r in regression_rows(ROWS, seed=10)]

    def stream() -> Any:
        return datasets.Dataset.from_list(plain).to_iterable_dataset().with_format("torch")

    full = build(tmp_path / "full", stream(), save_steps=100)
    full.train()
    build(tmp_path / "cut", stream(), save_steps=k, callbacks=[StopAfter(k)]).train()
    data = stream()
    loaded: list[Any] = []
    load = data.load_state_dict

    def spy(state: Any) -> None:
        loaded.append(state)
        load(state)

    data.load_state_dict = spy
    resumed = build(tmp_path / "cut", data, save_steps=k)
    resumed.train(resume_from_checkpoint=str(tmp_path / "cut" / f"checkpoint-{k}"))
    assert len(loaded) == 1
    assert_same_run(full, resumed)
