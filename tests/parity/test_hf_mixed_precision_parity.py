"""Mixed precision: bf16 on CPU through accelerate matches HF; fp16's skipped steps behave as HF's.

accelerate drops fp16 autocast and its grad scaler on CPU, so the skipped-step logic is exercised
with a CPU ``GradScaler`` put into the accelerator before ``train()`` (on both trainers) and an
infinite gradient injected at one step: that optimizer step is skipped, the schedule does not
advance for it, and ``global_step`` still counts it, exactly as in HF.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from statetrain import Trainer, TrainingArguments
from tests.helpers import TokenModel, token_rows

transformers = pytest.importorskip("transformers")

OPTIONS: dict[str, Any] = dict(
    per_device_train_batch_size=4,
    gradient_accumulation_steps=2,
    max_steps=6,
    learning_rate=5e-2,
    warmup_steps=2,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    use_cpu=True,
    seed=21,
    disable_tqdm=True,
    optim="adamw_torch",
)


class InfAt:
    """Puts an infinite value into one gradient right before the optimizer step at ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if state.global_step + 1 == self.step:
            next(p for p in model.parameters() if p.grad is not None).grad.view(-1)[0] = float("inf")


def run_pair(tmp_path: Any, scaler: bool, **overrides: Any) -> tuple[Any, Any]:
    torch.manual_seed(0)
    model, rows = TokenModel(), token_rows(40, seed=2)
    options = {**OPTIONS, **overrides}
    callbacks = [InfAt(3)] if scaler else []
    hf = transformers.Trainer(
        model=copy.deepcopy(model),
        args=transformers.TrainingArguments(str(tmp_path / "h"), **options),
        train_dataset=rows,
        callbacks=[type("HFInf", (InfAt, transformers.TrainerCallback), {})(3)] if scaler else None,
    )
    st = Trainer(
        model=copy.deepcopy(model),
        args=TrainingArguments(str(tmp_path / "s"), **options),
        train_dataset=rows,
        callbacks=callbacks,
    )
    if scaler:
        for trainer in (hf, st):
            trainer.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    hf.train()
    st.train()
    return hf, st


def logged(trainer: Any, key: str) -> list[float]:
    return [e[key] for e in trainer.state.log_history if "loss" in e]


def test_bf16_on_cpu_matches_hf(tmp_path: Any) -> None:
    hf, st = run_pair(tmp_path, scaler=False, bf16=True)
    assert st.accelerator.mixed_precision == "bf16"
    assert logged(st, "loss") == pytest.approx(logged(hf, "loss"), abs=1e-6)
    for a, b in zip(hf.model.parameters(), st.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)
    fp32 = run_pair(tmp_path / "fp32", scaler=False)[1]
    assert logged(fp32, "loss") != logged(st, "loss"), "bf16 must actually change the arithmetic"


def test_a_scaler_skipped_step_behaves_as_in_hf(tmp_path: Any) -> None:
    hf, st = run_pair(tmp_path, scaler=True, max_grad_norm=0.0)
    assert st.state.global_step == hf.state.global_step == 6
    lrs = logged(st, "learning_rate")
    assert lrs == pytest.approx(logged(hf, "learning_rate"), rel=1e-12)
    assert lrs[2] == lrs[3], "the schedule must not advance on the skipped step"
    assert st.accelerator.scaler.get_scale() < 2.0**8, "the overflow must have lowered the scale"
    for a, b in zip(hf.model.parameters(), st.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=0)
