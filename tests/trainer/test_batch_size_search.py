"""auto_find_batch_size: shrink by x0.9 on out-of-memory and restart from where train() started."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from statetrain import Trainer, TrainingArguments
from statetrain.trainer.batch_size_search import should_reduce_batch_size
from tests.helpers import TinyRegressor, regression_rows


def args(tmp_path: Path, **overrides: Any) -> TrainingArguments:
    options: dict[str, Any] = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        max_steps=4,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=1,
        learning_rate=0.1,
        seed=3,
    )
    options.update(overrides)
    return TrainingArguments(**options)


class MemoryBoundRegressor(TinyRegressor):
    """Runs out of memory on batches larger than ``limit``, from its ``from_call``-th forward on.

    Dropout draws from the global generator, so a retry that did not restore it would differ.
    """

    def __init__(self, limit: int, from_call: int = 1) -> None:
        super().__init__(dropout=0.2)
        self.limit = limit
        self.from_call = from_call
        self.calls = 0
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        self.calls += 1
        if self.calls >= self.from_call and x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"no room for a batch of {x.shape[0]}")
        self.batch_sizes.append(x.shape[0])
        return super().forward(x, labels)


def final_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def direct_run(tmp_path: Path, model: TinyRegressor, batch_size: int, **options: Any) -> Trainer:
    trainer = Trainer(
        model=model,
        args=args(tmp_path, per_device_train_batch_size=batch_size),
        train_dataset=regression_rows(64),
        **options,
    )
    trainer.train()
    return trainer


def test_out_of_memory_shrinks_the_batch_by_a_tenth_until_it_fits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = MemoryBoundRegressor(limit=5)
    trainer = Trainer(model=model, args=args(tmp_path, auto_find_batch_size=True), train_dataset=regression_rows(64))
    with caplog.at_level(logging.WARNING, logger="statetrain"):
        output = trainer.train()
    assert output.global_step == 4
    assert trainer.state.train_batch_size == 5 and trainer._train_batch_size == 5  # 8 -> 7 -> 6 -> 5
    assert set(model.batch_sizes) == {5}
    messages = [r.getMessage() for r in caplog.records if "auto_find_batch_size" in r.getMessage()]
    assert [m.split("batch size ")[1].split(" ")[0] for m in messages] == ["8", "7", "6"]


def test_a_retry_starts_from_a_clean_state(tmp_path: Path) -> None:
    """OOM after two optimizer steps: the retry discards them, weights, momentum, schedule and RNG alike."""
    model = MemoryBoundRegressor(limit=6, from_call=3)
    reference = copy.deepcopy(model)
    momentum: dict[str, Any] = {"optimizer_cls_and_kwargs": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9})}
    trainer = Trainer(
        model=model,
        args=args(tmp_path, auto_find_batch_size=True, lr_scheduler_type="linear"),
        train_dataset=regression_rows(64),
        **momentum,
    )
    trainer.train()
    assert model.batch_sizes[:2] == [8, 8] and trainer.state.train_batch_size == 6
    reference.from_call = 10**9
    expected = direct_run(tmp_path, reference, 6, **momentum)
    assert [e["loss"] for e in trainer.state.log_history[:-1]] == [e["loss"] for e in expected.state.log_history[:-1]]
    for name, value in final_params(reference).items():
        assert torch.equal(final_params(model)[name], value), name


def test_a_prebuilt_optimizer_and_schedule_get_their_starting_state_back(tmp_path: Path) -> None:
    def build(model: torch.nn.Module) -> tuple[torch.optim.Optimizer, Any]:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

    model = MemoryBoundRegressor(limit=6, from_call=3)
    reference = copy.deepcopy(model)
    optimizers = build(model)
    trainer = Trainer(
        model=model,
        args=args(tmp_path, auto_find_batch_size=True),
        train_dataset=regression_rows(64),
        optimizers=optimizers,
    )
    trainer.train()
    assert getattr(trainer.optimizer, "optimizer", trainer.optimizer) is optimizers[0]
    assert trainer.lr_scheduler is optimizers[1]
    reference.from_call = 10**9
    expected = direct_run(tmp_path, reference, 6, optimizers=build(reference))
    lrs = [e["learning_rate"] for e in trainer.state.log_history if "learning_rate" in e]
    assert lrs == [e["learning_rate"] for e in expected.state.log_history if "learning_rate" in e]
    for name, value in final_params(reference).items():
        assert torch.equal(final_params(model)[name], value), name


def test_without_the_option_out_of_memory_propagates(tmp_path: Path) -> None:
    trainer = Trainer(model=MemoryBoundRegressor(limit=5), args=args(tmp_path), train_dataset=regression_rows(64))
    with pytest.raises(torch.OutOfMemoryError):
        trainer.train()


def test_other_errors_are_not_retried(tmp_path: Path) -> None:
    class Broken(TinyRegressor):
        calls = 0

        def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
            Broken.calls += 1
            raise ValueError("not a memory problem")

    trainer = Trainer(model=Broken(), args=args(tmp_path, auto_find_batch_size=True), train_dataset=regression_rows(64))
    with pytest.raises(ValueError, match="not a memory problem"):
        trainer.train()
    assert Broken.calls == 1


def test_running_out_at_batch_size_one_is_a_clear_error(tmp_path: Path) -> None:
    trainer = Trainer(
        model=MemoryBoundRegressor(limit=0),
        args=args(tmp_path, per_device_train_batch_size=2, auto_find_batch_size=True),
        train_dataset=regression_rows(16),
    )
    with pytest.raises(RuntimeError, match="even with a train batch size of 1"):
        trainer.train()


def test_resume_continues_at_the_batch_size_found(tmp_path: Path) -> None:
    first = Trainer(
        model=MemoryBoundRegressor(limit=6),
        args=args(tmp_path, auto_find_batch_size=True, save_strategy="steps", save_steps=4),
        train_dataset=regression_rows(64),
    )
    first.train()
    model = MemoryBoundRegressor(limit=6)
    resumed = Trainer(
        model=model,
        args=args(tmp_path, auto_find_batch_size=True, max_steps=6, save_strategy="no"),
        train_dataset=regression_rows(64),
    )
    assert resumed.train(resume_from_checkpoint=True).global_step == 6
    assert model.batch_sizes == [6, 6] and resumed.state.train_batch_size == 6  # no search on resume


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (torch.OutOfMemoryError("anything"), True),
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"), True),
        (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"), True),
        (RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if ..."), True),
        (RuntimeError("size mismatch"), False),
        (RuntimeError("out of memory.", "two arguments"), False),
        (ValueError("CUDA out of memory."), False),
    ],
)
def test_which_errors_shrink_the_batch(error: BaseException, expected: bool) -> None:
    assert should_reduce_batch_size(error) is expected
    accelerate_memory = pytest.importorskip("accelerate.utils.memory")
    if not isinstance(error, torch.OutOfMemoryError):  # accelerate matches messages only
        assert accelerate_memory.should_reduce_batch_size(error) is expected
