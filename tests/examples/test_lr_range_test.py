"""The LR range test example: a state before the first epoch that leaves no trace but the rate it found."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from statetrain import Trainer, TrainingArguments
from statetrain.examples.lr_range_test import LRRangeTestState, lr_range_test_machine
from statetrain.testing import assert_resumes_bit_exactly, compare_trainers
from tests.helpers import TinyRegressor, regression_rows


def make_trainer(
    output_dir: str, learning_rate: float = 1e-3, range_test: bool = True, dropout: float = 0.1
) -> Trainer:
    torch.manual_seed(0)
    args = TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=8,
        num_train_epochs=2,
        learning_rate=learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=2,
        logging_steps=2,
        save_strategy="steps" if range_test else "no",
        save_steps=5,
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        seed=7,
    )
    machine = lr_range_test_machine(LRRangeTestState(min_lr=1e-4, max_lr=10.0, num_steps=20)) if range_test else None
    return Trainer(
        model=TinyRegressor(dropout=dropout),
        args=args,
        train_dataset=regression_rows(48),
        machine=machine,
    )


def test_the_rate_found_is_the_best_rate_over_the_divisor_and_it_is_used(tmp_path: Path) -> None:
    trainer = make_trainer(str(tmp_path / "test"))
    trainer.train()
    memo = trainer.run_context.engine.custom["lr_range_test"]
    rates, losses = memo["rates"], memo["losses"]
    assert 2 <= len(rates) <= 20 and rates == sorted(rates)
    assert memo["found_lr"] == rates[losses.index(min(losses))] / 10
    assert trainer.run_context.lr_scheduler.base_lrs == [memo["found_lr"]] * 2


def test_training_after_the_test_equals_training_from_scratch_at_the_rate_found(tmp_path: Path) -> None:
    with_test = make_trainer(str(tmp_path / "test"))
    with_test.train()
    found = with_test.run_context.engine.custom["lr_range_test"]["found_lr"]
    assert found != 1e-3
    plain = make_trainer(str(tmp_path / "plain"), learning_rate=found, range_test=False)
    plain.train()
    # the sweep left the weights, the optimizer and the random generators (dropout) untouched
    differences = [d for d in compare_trainers(with_test, plain) if not d.startswith("run.custom_state")]
    assert differences == []


def test_a_checkpoint_is_taken_right_after_the_test(tmp_path: Path) -> None:
    make_trainer(str(tmp_path)).train()
    assert (tmp_path / "checkpoint-0").is_dir()


class CountedRangeTest(LRRangeTestState):
    sweeps = 0

    def _sweep(self, run, optimizer):  # type: ignore[no-untyped-def]
        CountedRangeTest.sweeps += 1
        return super()._sweep(run, optimizer)


@pytest.mark.parametrize("cut", [0, 5])
def test_resume_never_repeats_the_test_and_is_bit_exact(tmp_path: Path, cut: int) -> None:
    def make(output_dir: str) -> Trainer:
        trainer = make_trainer(output_dir)
        trainer.machine = lr_range_test_machine(CountedRangeTest(min_lr=1e-4, max_lr=10.0, num_steps=20))
        return trainer

    CountedRangeTest.sweeps = 0
    result = assert_resumes_bit_exactly(make, cut, tmp_path)
    assert CountedRangeTest.sweeps == 1  # the uninterrupted run's; the resumed run read the result back
    resumed, uninterrupted = result.resumed.run_context, result.uninterrupted.run_context
    assert resumed is not None and uninterrupted is not None
    assert resumed.engine.custom["lr_range_test"] == uninterrupted.engine.custom["lr_range_test"]


def test_bad_sweep_bounds_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="min_lr < max_lr"):
        LRRangeTestState(min_lr=1.0, max_lr=0.1)
    with pytest.raises(ValueError, match="num_steps"):
        LRRangeTestState(num_steps=1)
