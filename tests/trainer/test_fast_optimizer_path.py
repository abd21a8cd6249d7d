"""The direct optimizer step: without a grad scaler the engine steps the raw optimizer, not
accelerate's ``AcceleratedOptimizer`` wrapper, and the run is bit-identical to stepping the wrapper.

Two halves, so the test fails if the fast path is removed *or* if it ever changes the numbers:

* in a normal run the stepped object is the raw ``torch.optim.AdamW`` and the wrapper's ``step`` is
  never called;
* a run forced through the wrapper (same model, data, seed) ends with exactly equal parameters,
  optimizer moments and logged losses, grad norms and learning rates.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from accelerate.optimizer import AcceleratedOptimizer

from statetrain import Trainer, TrainingArguments
from tests.helpers import TinyRegressor, regression_rows

LOGGED = ("loss", "grad_norm", "learning_rate", "epoch", "step")


class RecordingTrainer(Trainer):
    """Keeps the run context its ``train()`` prepared, to read which object gets stepped."""

    prepared: Any = None

    def _prepare_run(self, run: Any, train_dataloader: Any) -> None:
        super()._prepare_run(run, train_dataloader)
        self.prepared = run


class WrapperSteppingTrainer(RecordingTrainer):
    """The same Trainer with the fast path switched off: every step goes through the wrapper."""

    def _prepare_run(self, run: Any, train_dataloader: Any) -> None:
        super()._prepare_run(run, train_dataloader)
        assert isinstance(run.optimizer, AcceleratedOptimizer)
        run.step_optimizer = run.optimizer


def _train(
    trainer_cls: type[RecordingTrainer], model: torch.nn.Module, tmp_path: Any, **options: Any
) -> RecordingTrainer:
    args = TrainingArguments(
        output_dir=str(tmp_path / trainer_cls.__name__),
        per_device_train_batch_size=8,
        num_train_epochs=2,
        learning_rate=5e-2,
        warmup_steps=2,
        weight_decay=0.1,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=7,
        disable_tqdm=True,
        optim="adamw_torch",
        dataloader_pin_memory=False,
        **options,
    )
    trainer = trainer_cls(model=copy.deepcopy(model), args=args, train_dataset=regression_rows(60, seed=3))
    trainer.train()
    return trainer


def _logged(trainer: Trainer) -> list[dict[str, Any]]:
    return [{k: entry[k] for k in LOGGED if k in entry} for entry in trainer.state.log_history]


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"max_grad_norm": 0.0}, id="no-clipping"),
        pytest.param({"max_grad_norm": 0.05, "gradient_accumulation_steps": 2}, id="clipping-accumulation"),
    ],
)
def test_direct_step_is_bit_identical_to_the_wrapper(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, options: dict[str, Any]
) -> None:
    wrapper_steps: list[int] = []
    original_step = AcceleratedOptimizer.step

    def counting_step(self: AcceleratedOptimizer, closure: Any = None) -> Any:
        wrapper_steps.append(1)
        return original_step(self, closure)

    monkeypatch.setattr(AcceleratedOptimizer, "step", counting_step)
    torch.manual_seed(0)
    model = TinyRegressor()

    fast = _train(RecordingTrainer, model, tmp_path, **options)
    run = fast.prepared
    # The fast path is taken: the raw optimizer inside the wrapper is what gets stepped...
    assert isinstance(run.optimizer, AcceleratedOptimizer)
    assert not isinstance(run.step_optimizer, AcceleratedOptimizer)
    assert type(run.step_optimizer) is torch.optim.AdamW
    assert run.step_optimizer is run.optimizer.optimizer
    assert wrapper_steps == []  # ...and the wrapper's step never runs
    steps = fast.state.global_step
    assert steps == fast.state.max_steps > 0

    slow = _train(WrapperSteppingTrainer, model, tmp_path, **options)
    assert slow.prepared.step_optimizer is slow.prepared.optimizer
    assert len(wrapper_steps) == steps  # the comparison run really went through the wrapper
    assert slow.state.global_step == steps

    # Same parameters, bit for bit.
    fast_params = dict(fast.model.named_parameters())
    slow_params = dict(slow.model.named_parameters())
    assert fast_params.keys() == slow_params.keys()
    for name, value in fast_params.items():
        assert torch.equal(value, slow_params[name]), f"parameter {name} differs"
        assert not torch.equal(value, dict(model.named_parameters())[name]), f"{name} never trained"

    # Same optimizer moments and step counts.
    fast_state = run.step_optimizer.state_dict()["state"]
    slow_state = slow.prepared.optimizer.optimizer.state_dict()["state"]
    assert fast_state.keys() == slow_state.keys()
    for index, moments in fast_state.items():
        for key, value in moments.items():
            assert torch.equal(value, slow_state[index][key]), f"optimizer state {index}.{key} differs"

    # Same log: every step's loss, grad norm and learning rate, and the closing train_loss.
    fast_log, slow_log = _logged(fast), _logged(slow)
    assert sum("loss" in entry for entry in fast_log) == steps
    assert all("grad_norm" in entry for entry in fast_log if "loss" in entry)
    assert fast_log == slow_log
    assert fast.state.log_history[-1]["train_loss"] == slow.state.log_history[-1]["train_loss"]
    assert fast.lr_scheduler.get_last_lr() == slow.lr_scheduler.get_last_lr()
