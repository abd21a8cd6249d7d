"""The evaluation-only example: a sweep over named datasets, no update, resumable after each dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from statetrain import Trainer, TrainerCallback, TrainingArguments
from statetrain.examples.eval_only import eval_only_machine, sweep_results
from statetrain.testing import assert_resumes_bit_exactly
from tests.helpers import TinyRegressor, regression_rows

NAMES = ("easy", "medium", "hard")


class EvaluationLog(TrainerCallback):
    def __init__(self) -> None:
        self.evaluated: list[str] = []

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float], **kwargs: Any) -> None:
        self.evaluated.append(next(k for k in metrics if k.endswith("_loss")).split("_")[1])


def make_trainer(output_dir: str, save: bool = True) -> Trainer:
    torch.manual_seed(0)
    args = TrainingArguments(
        output_dir=output_dir,
        per_device_eval_batch_size=5,
        save_strategy="steps" if save else "no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
    )
    datasets = {name: regression_rows(12 + 4 * i, seed=10 + i) for i, name in enumerate(NAMES)}
    return Trainer(
        model=TinyRegressor(),
        args=args,
        eval_dataset=datasets,
        machine=eval_only_machine(),
        callbacks=[EvaluationLog()],
    )


def log_of(trainer: Trainer) -> EvaluationLog:
    return next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, EvaluationLog))


def test_the_sweep_evaluates_each_dataset_once_and_changes_nothing(tmp_path: Path) -> None:
    trainer = make_trainer(str(tmp_path))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    output = trainer.train()
    assert output.global_step == 0
    assert log_of(trainer).evaluated == list(NAMES)
    assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    results = sweep_results(trainer.run_context)
    assert list(results) == list(NAMES)
    for name in NAMES:  # the sweep's numbers are exactly Trainer.evaluate's
        direct = trainer.evaluate(eval_dataset=trainer.eval_dataset[name], metric_key_prefix=f"eval_{name}")
        assert results[name][f"eval_{name}_loss"] == direct[f"eval_{name}_loss"]
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-0"]


def test_a_resumed_sweep_evaluates_only_what_is_left(tmp_path: Path) -> None:
    first = make_trainer(str(tmp_path / "first"))
    first.add_callback(StopAfterFirst())
    with pytest.raises(KeyboardInterrupt):  # a crash right after the first checkpoint
        first.train()
    assert log_of(first).evaluated == ["easy"]
    checkpoint = tmp_path / "first" / "checkpoint-0"
    resumed = make_trainer(str(tmp_path / "resumed"))
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert log_of(resumed).evaluated == ["medium", "hard"]
    uninterrupted = make_trainer(str(tmp_path / "full"), save=False)
    uninterrupted.train()
    assert sweep_results(resumed.run_context) == sweep_results(uninterrupted.run_context)


class StopAfterFirst(TrainerCallback):
    """Kills the sweep right after its first checkpoint is committed."""

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt


def test_resume_is_bit_exact(tmp_path: Path) -> None:
    assert_resumes_bit_exactly(make_trainer, 0, tmp_path)


def test_without_named_datasets_it_fails_before_any_work(tmp_path: Path) -> None:
    trainer = make_trainer(str(tmp_path))
    trainer.eval_dataset = regression_rows(8)
    with pytest.raises(ValueError, match="eval_dataset as a non-empty dict"):
        trainer.train()
