"""``nan_inf_policy``: what a NaN/Inf training loss does to the step (filter, skip, raise, stop).

One poisoned row (an infinite input) makes the second micro-batch of the second window produce
a NaN loss; data are read in order so that the poisoned step is known: step 2.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pydantic
import pytest
import torch

from statetrain import Trainer, TrainingArguments
from statetrain.optim.loss import NonFiniteLossError, NonFiniteWarning
from tests.helpers import TinyRegressor, regression_rows

POISONED_STEP = 2


def poisoned_rows() -> list[dict[str, Any]]:
    rows = regression_rows(24, seed=1)  # 6 micro-batches of 4, windows of 2: 3 steps
    rows[13]["x"] = torch.full_like(rows[13]["x"], float("inf"))  # micro-batch 4 = 2nd of window 2
    return rows


class ParamRecorder:
    """Keeps a copy of the parameters after every optimizer step."""

    def __init__(self) -> None:
        self.after_step: dict[int, list[torch.Tensor]] = {}

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.after_step[state.global_step] = [p.detach().clone() for p in model.parameters()]


def make_trainer(tmp_path: Path, policy: str, **extra: Any) -> tuple[Trainer, ParamRecorder]:
    options: dict[str, Any] = dict(
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        num_train_epochs=1,
        learning_rate=0.05,
        optim="adamw_torch",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        train_sampling_strategy="sequential",
        nan_inf_policy=policy,
    )
    options.update(extra)
    recorder = ParamRecorder()
    torch.manual_seed(0)
    trainer = Trainer(
        model=TinyRegressor(),
        args=TrainingArguments(str(tmp_path), **options),
        train_dataset=poisoned_rows(),
        callbacks=[recorder],
    )
    return trainer, recorder


def all_finite(params: list[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in params)


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_filter_is_hfs_behaviour_the_log_stays_finite_but_the_update_is_applied(tmp_path: Path) -> None:
    trainer, recorder = make_trainer(tmp_path, "filter")
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert all(math.isfinite(v) for v in losses)
    assert not all_finite(recorder.after_step[POISONED_STEP])  # HF applies the NaN update


def test_skip_leaves_the_parameters_and_optimizer_untouched_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trainer, recorder = make_trainer(tmp_path, "skip")
    with caplog.at_level(logging.WARNING), pytest.warns(NonFiniteWarning) as warned:
        output = trainer.train()
    assert output.global_step == 3
    (said,) = [str(w.message) for w in warned if "training loss" in str(w.message)]
    assert "update was kept out of the weights" in said and "use nan_inf_policy" not in said  # no advice to pick skip
    steps = recorder.after_step
    assert same(steps[POISONED_STEP], steps[POISONED_STEP - 1])
    assert all_finite(steps[3]) and not same(steps[3], steps[2])
    # the optimizer saw two updates, not three: no moment or step count from the skipped window
    counts = {int(s["step"]) for s in trainer.optimizer.state.values()}  # type: ignore[union-attr]
    assert counts == {2}
    message = " ".join(r.getMessage() for r in caplog.records if "nan_inf_policy='skip'" in r.getMessage())
    assert f"update of step {POISONED_STEP} is skipped" in message and "micro-batch 2 of 2" in message
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert all(math.isfinite(e["loss"]) for e in logs) and math.isfinite(output.training_loss)
    # the finite micro-batch of the skipped window is left out of the log too
    assert logs[POISONED_STEP - 1]["loss"] == 0.0


def test_skip_counts_the_skipped_step_as_the_mean_of_the_steps_before_it(tmp_path: Path) -> None:
    per_step, _ = make_trainer(tmp_path / "per_step", "skip")
    per_step.train()
    first, _, third = (e["loss"] for e in per_step.state.log_history if "loss" in e)
    trainer, _ = make_trainer(tmp_path / "every_3", "skip", logging_steps=3)
    trainer.train()
    (log,) = [e for e in trainer.state.log_history if "loss" in e]
    assert log["loss"] == pytest.approx((first + first + third) / 3, abs=1e-6)


def test_raise_names_the_step_and_the_micro_batch(tmp_path: Path) -> None:
    trainer, recorder = make_trainer(tmp_path, "raise")
    with pytest.raises(NonFiniteLossError, match=r"global_step 1 \(computing step 2\), micro-batch 2 of 2"):
        trainer.train()
    assert trainer.state.global_step == 1
    assert all_finite(recorder.after_step[1])


def test_stop_saves_a_checkpoint_of_the_last_good_parameters_and_ends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trainer, recorder = make_trainer(tmp_path, "stop")
    with caplog.at_level(logging.WARNING):
        output = trainer.train()
    assert output.global_step == POISONED_STEP
    assert same(recorder.after_step[POISONED_STEP], recorder.after_step[POISONED_STEP - 1])
    assert all_finite([p for p in trainer.model.parameters()])
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("checkpoint-")) == [
        f"checkpoint-{POISONED_STEP}"
    ]
    assert any("nan_inf_policy='stop'" in r.getMessage() for r in caplog.records)


def test_an_unknown_policy_is_refused_with_the_allowed_values(tmp_path: Path) -> None:
    with pytest.raises(pydantic.ValidationError, match="nan_inf_policy"):
        TrainingArguments(str(tmp_path), nan_inf_policy="ignore")  # type: ignore[arg-type]
    args = TrainingArguments(str(tmp_path), use_cpu=True)
    args.nan_inf_policy = "ignore"  # type: ignore[assignment]
    with pytest.raises(ValueError, match=r"nan_inf_policy must be one of \['filter', 'skip', 'raise', 'stop'\]"):
        Trainer(model=TinyRegressor(), args=args)


def test_skip_under_a_grad_scaler_lets_the_scaler_skip_the_step() -> None:
    """fp16 keeps the scaler's own skip: the dropped window's gradients become NaN, the scaler skips."""
    from types import SimpleNamespace

    from statetrain.states.accumulate import _discard_gradients

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    scaler.scale(model(torch.randn(4, 3)).sum()).backward()
    before = [p.detach().clone() for p in model.parameters()]
    _discard_gradients(SimpleNamespace(scaler_in_use=True, model=model))  # type: ignore[arg-type]
    scaler.step(optimizer)
    scaler.update()
    assert same(before, list(model.parameters()))
    assert scaler.get_scale() == 2.0
