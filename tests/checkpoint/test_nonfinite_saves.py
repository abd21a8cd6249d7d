"""Non-finite losses do not poison checkpoints: warned once naming the step, NaN weights never saved,
the last finite checkpoint survives rotation, and a resume from True continues from it."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from statetrain import Trainer, TrainingArguments
from statetrain.checkpoint.store import CheckpointWarning, list_checkpoints, verify_checkpoint
from statetrain.optim.loss import NonFiniteWarning, NonFiniteWatch
from tests.helpers import TinyRegressor, regression_rows

POISONED_STEP = 3


def poisoned_rows() -> list[dict[str, Any]]:
    rows = regression_rows(24, seed=1)  # 6 steps of 4, read in order
    rows[(POISONED_STEP - 1) * 4 + 1]["x"] = torch.full_like(rows[0]["x"], float("nan"))
    return rows


def build(out: Path, rows: list[dict[str, Any]], **extra: Any) -> Trainer:
    options: dict[str, Any] = dict(
        per_device_train_batch_size=4,
        num_train_epochs=1,
        learning_rate=0.05,
        logging_steps=1,
        save_steps=1,
        save_total_limit=2,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        train_sampling_strategy="sequential",
    )
    torch.manual_seed(0)
    return Trainer(model=TinyRegressor(), args=TrainingArguments(str(out), **{**options, **extra}), train_dataset=rows)


def finite_weights(checkpoint: Path) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in load_file(str(checkpoint / "model.safetensors")).values())


@pytest.mark.parametrize("nan_filter", [True, False])
def test_a_nan_loss_by_default_warns_once_and_keeps_the_last_finite_checkpoints(
    tmp_path: Path, nan_filter: bool
) -> None:
    trainer = build(tmp_path, poisoned_rows(), logging_nan_inf_filter=nan_filter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    nonfinite = [str(w.message) for w in caught if issubclass(w.category, NonFiniteWarning)]
    assert any(f"training loss was NaN or infinite at step {POISONED_STEP}" in m for m in nonfinite), nonfinite
    assert len([m for m in nonfinite if "training loss" in m]) == 1  # once per run
    refused = [str(w.message) for w in caught if issubclass(w.category, CheckpointWarning)]
    assert any(f"not saving checkpoint-{POISONED_STEP}" in m and "not finite" in m for m in refused), refused
    assert not all(bool(torch.isfinite(p).all()) for p in trainer.model.parameters())  # HF's update went in
    kept = list_checkpoints(tmp_path)
    assert [p.name for p in kept] == [f"checkpoint-{POISONED_STEP - 2}", f"checkpoint-{POISONED_STEP - 1}"]
    for checkpoint in kept:
        verify_checkpoint(checkpoint)
        assert finite_weights(checkpoint)
    resumed = build(tmp_path, regression_rows(24, seed=1))
    resumed.train(resume_from_checkpoint=True)  # continues from the newest finite checkpoint
    assert resumed.state.global_step == 6
    assert all(bool(torch.isfinite(p).all()) for p in resumed.model.parameters())


def test_skip_policy_keeps_saving_finite_checkpoints(tmp_path: Path) -> None:
    trainer = build(tmp_path, poisoned_rows(), nan_inf_policy="skip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    assert not [w for w in caught if issubclass(w.category, CheckpointWarning)]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-5", "checkpoint-6"]
    assert all(finite_weights(p) for p in list_checkpoints(tmp_path))


def test_the_watch_records_on_the_device_without_reading_it() -> None:
    """The per-step record reads nothing on the host; the first bad step is still found at the report."""
    watch = NonFiniteWatch()
    loss = torch.tensor(1.5)
    reads: list[int] = []
    original = torch.Tensor.item

    def counting(self: torch.Tensor) -> Any:
        reads.append(1)
        return original(self)

    torch.Tensor.item = counting  # type: ignore[method-assign]
    try:
        for step in range(1, 2001):
            watch.note("loss", loss, step)
    finally:
        torch.Tensor.item = original  # type: ignore[method-assign]
    assert reads == []  # no host sync on the hot path
    watch.note("loss", torch.tensor(float("inf")), 2001)
    watch.note("loss", torch.tensor(float("nan")), 2002)
    with pytest.warns(NonFiniteWarning, match="at step 2001"):
        watch.report(type("R", (), {"args": None})())


def test_a_finite_value_read_at_the_log_settles_the_pending_ones_without_device_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checks: list[int] = []
    isfinite = torch.isfinite
    monkeypatch.setattr(torch, "isfinite", lambda t: checks.append(1) or isfinite(t))
    run = type("R", (), {"args": None})()

    watch = NonFiniteWatch()
    for step in range(1, 51):
        watch.note("loss", torch.tensor(1.0), step)
    grad_norm = torch.tensor(2.0)
    watch.note("grad_norm", grad_norm, 50)
    watch.settle("loss", 50.0)  # the log's loss sum covers every pending loss
    watch.settle("grad_norm", 2.0, only=grad_norm)  # the logged grad norm is the one pending
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        watch.report(run)
    assert checks == []

    other = NonFiniteWatch()
    for step in range(1, 4):
        other.note("grad_norm", torch.tensor(1.0), step)
    other.settle("grad_norm", 1.0, only=torch.tensor(1.0))  # not the pending values: nothing settled
    other.note("loss", torch.tensor(1.0), 6)
    other.note("loss", torch.tensor(float("inf")), 7)
    other.settle("loss", float("inf"))  # a non-finite sum settles nothing
    with pytest.warns(NonFiniteWarning, match="at step 7"):
        other.report(run)
    assert len(checks) == 2  # both kinds were checked on the device


def test_a_cpu_watch_reads_each_value_when_noted_and_keeps_none() -> None:
    import gc
    import weakref

    watch = NonFiniteWatch("cpu")
    losses = [torch.tensor(1.0) for _ in range(3)] + [torch.tensor(float("nan")), torch.tensor(float("inf"))]
    refs = [weakref.ref(loss) for loss in losses]
    for step, loss in enumerate(losses, start=1):
        watch.note("loss", loss, step)
    del losses, loss
    gc.collect()
    assert all(ref() is None for ref in refs)  # nothing kept between two logs
    with pytest.warns(NonFiniteWarning, match="at step 4"):
        watch.report(type("R", (), {"args": None})())
