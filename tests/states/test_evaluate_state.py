"""The evaluate state inside training: best-metric tracking, save on best, plateau schedules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from statetrain import Trainer, TrainingArguments
from tests.helpers import TinyRegressor, regression_rows


def scripted_metrics(values: list[float]) -> Any:
    """A compute_metrics that reports the given scores in turn."""
    it = iter(values)

    def compute(pred: Any) -> dict[str, float]:
        return {"score": next(it)}

    return compute


def trainer(tmp_path: Path, metrics: list[float], **overrides: Any) -> Trainer:
    options: dict[str, Any] = dict(
        per_device_train_batch_size=4,
        max_steps=len(metrics),
        eval_strategy="steps",
        eval_steps=1,
        logging_steps=1,
        use_cpu=True,
        disable_tqdm=True,
        report_to="none",
        seed=2,
        metric_for_best_model="score",
        greater_is_better=True,
        save_strategy="no",
    )
    options.update(overrides)
    torch.manual_seed(0)
    return Trainer(
        model=TinyRegressor(),
        args=TrainingArguments(str(tmp_path), **options),
        train_dataset=regression_rows(64),
        eval_dataset=regression_rows(6, seed=5),
        compute_metrics=scripted_metrics(metrics),
    )


def test_best_metric_and_step_follow_strict_improvement(tmp_path: Path) -> None:
    t = trainer(tmp_path, [0.2, 0.5, 0.5, 0.4, 0.7, 0.1], save_strategy="steps", save_steps=100)
    t.train()
    assert t.state.best_metric == 0.7
    assert t.state.best_global_step == 5


def test_save_strategy_best_writes_checkpoints_only_on_a_new_best(tmp_path: Path) -> None:
    t = trainer(tmp_path, [0.2, 0.5, 0.5, 0.4, 0.7, 0.1], save_strategy="best")
    t.train()
    saved = sorted(int(p.name.split("-")[1]) for p in tmp_path.glob("checkpoint-*"))
    assert saved == [1, 2, 5]
    assert t.state.best_model_checkpoint == str(tmp_path / "checkpoint-5")


def test_reduce_lr_on_plateau_steps_on_the_evaluation_metric(tmp_path: Path) -> None:
    t = trainer(
        tmp_path,
        [0.5, 0.4, 0.4, 0.3, 0.3, 0.3],
        lr_scheduler_type="reduce_lr_on_plateau",
        lr_scheduler_kwargs={"patience": 0, "factor": 0.5},
        learning_rate=0.1,
    )
    t.train()
    lrs = [e["learning_rate"] for e in t.state.log_history if "loss" in e]
    # plateau mode "min" (HF's default): 0.4 improves on 0.5, the repeated 0.4 does not, so the LR
    # halves after the 3rd evaluation; likewise after the 5th and 6th. The LR logged at step k is the
    # one step k used (logged before the evaluation that follows it).
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.025])
    raw = getattr(t.optimizer, "optimizer", t.optimizer)
    assert raw.param_groups[0]["lr"] == pytest.approx(0.0125)


def test_bf16_full_eval_casts_the_model_outside_training(tmp_path: Path) -> None:
    from tests.helpers import TokenModel, token_rows

    args = TrainingArguments(str(tmp_path), bf16_full_eval=True, use_cpu=True, disable_tqdm=True, report_to="none")
    rows = token_rows(6, seed=3)
    full = Trainer(model=TokenModel(), args=TrainingArguments(str(tmp_path), use_cpu=True, report_to="none"))
    half = Trainer(model=TokenModel(), args=args)
    half.model.load_state_dict(full.model.state_dict())
    reference, metrics = full.evaluate(rows), half.evaluate(rows)
    assert next(half.model.parameters()).dtype == torch.bfloat16
    assert metrics["eval_loss"] == pytest.approx(reference["eval_loss"], rel=2e-2)
    assert metrics["eval_loss"] != reference["eval_loss"]
