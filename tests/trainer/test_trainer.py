"""The Trainer facade: HF constructor behaviour, argument refusal by name, repeated train()."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from statetrain import (
    DefaultFlowCallback,
    PrinterCallback,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from statetrain.checkpoint.output_lock import LOCK_NAME
from tests.helpers import TinyRegressor, regression_rows


def args(tmp_path: Path, **overrides: Any) -> TrainingArguments:
    options: dict[str, Any] = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=4,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=2,
        seed=11,
    )
    options.update(overrides)
    return TrainingArguments(**options)


def test_train_returns_hf_metric_names_and_can_run_twice(tmp_path: Path) -> None:
    trainer = Trainer(model=TinyRegressor(), args=args(tmp_path), train_dataset=regression_rows(40))
    first = trainer.train()
    assert first.global_step == 4
    assert {"train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "epoch"} <= set(
        first.metrics
    )
    assert first.training_loss == pytest.approx(first.metrics["train_loss"])
    weights = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    second = trainer.train()
    assert second.global_step == 4 and trainer.state.global_step == 4
    assert any(not torch.equal(p, weights[n]) for n, p in trainer.model.named_parameters())
    # the schedule was rebuilt for the second call: its first log has the warm learning rate again
    lrs = [e["learning_rate"] for e in trainer.state.log_history if "loss" in e]
    assert lrs[0] == pytest.approx(first_lr(tmp_path))


def first_lr(tmp_path: Path) -> float:
    t = Trainer(model=TinyRegressor(), args=args(tmp_path), train_dataset=regression_rows(40))
    t.train()
    return float(next(e["learning_rate"] for e in t.state.log_history if "loss" in e))


def test_train_loss_is_mean_of_step_losses(tmp_path: Path) -> None:
    trainer = Trainer(model=TinyRegressor(), args=args(tmp_path, logging_steps=1), train_dataset=regression_rows(40))
    out = trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert out.training_loss == pytest.approx(sum(losses) / len(losses), rel=1e-6)


def test_default_callbacks_follow_hf(tmp_path: Path) -> None:
    class Mine(TrainerCallback):
        pass

    tqdm_trainer = Trainer(model=TinyRegressor(), args=args(tmp_path, disable_tqdm=False), callbacks=[Mine])
    kinds = [type(c) for c in tqdm_trainer.callback_handler.callbacks]
    assert kinds == [DefaultFlowCallback, Mine, ProgressCallback]
    printer = Trainer(model=TinyRegressor(), args=args(tmp_path))
    assert type(printer.callback_handler.callbacks[-1]) is PrinterCallback
    assert isinstance(printer.pop_callback(PrinterCallback), PrinterCallback)
    printer.add_callback(ProgressCallback)
    printer.remove_callback(DefaultFlowCallback)
    assert [type(c) for c in printer.callback_handler.callbacks] == [ProgressCallback]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("use_liger_kernel", True),
    ],
)
def test_unimplemented_arguments_are_refused_by_name(tmp_path: Path, field: str, value: Any) -> None:
    with pytest.raises(NotImplementedError, match=field):
        Trainer(model=TinyRegressor(), args=args(tmp_path, **{field: value}))


def test_default_save_strategy_saves_the_last_step(tmp_path: Path) -> None:
    trainer = Trainer(
        model=TinyRegressor(),
        args=TrainingArguments(str(tmp_path), use_cpu=True, max_steps=2, disable_tqdm=True),
        train_dataset=regression_rows(8),
    )
    trainer.train()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != LOCK_NAME) == ["checkpoint-2"]


def test_resume_without_any_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"No valid checkpoint found in output directory \("):
        Trainer(model=TinyRegressor(), args=args(tmp_path), train_dataset=regression_rows(8)).train(
            resume_from_checkpoint=True
        )


def test_model_and_model_init_rules(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="model_init"):
        Trainer(args=args(tmp_path))
    with pytest.raises(ValueError, match="not both"):
        Trainer(model=TinyRegressor(), model_init=TinyRegressor, args=args(tmp_path))
    with pytest.raises(RuntimeError, match="0 or 1 argument"):
        Trainer(model_init=TinyRegressor, args=args(tmp_path))
    built: list[TinyRegressor] = []

    def init() -> TinyRegressor:
        built.append(TinyRegressor())
        return built[-1]

    trainer = Trainer(model_init=init, args=args(tmp_path), train_dataset=regression_rows(16))
    assert trainer.train().global_step == 4
    assert len(built) == 2 and trainer.model is built[-1]  # re-initialised by train(), as HF does


def test_prebuilt_optimizer_and_scheduler_are_used(tmp_path: Path) -> None:
    model = TinyRegressor()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    trainer = Trainer(
        model=model,
        args=args(tmp_path, logging_steps=1),
        train_dataset=regression_rows(16),
        optimizers=(optimizer, scheduler),
    )
    trainer.train()
    assert [e["learning_rate"] for e in trainer.state.log_history if "loss" in e] == [0.5] * 4
    assert getattr(trainer.optimizer, "optimizer", trainer.optimizer) is optimizer


def test_optimizer_cls_and_kwargs_and_conflict(tmp_path: Path) -> None:
    trainer = Trainer(
        model=TinyRegressor(),
        args=args(tmp_path),
        train_dataset=regression_rows(16),
        optimizer_cls_and_kwargs=(torch.optim.SGD, {"lr": 0.25, "momentum": 0.9}),
    )
    trainer.train()
    raw = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    assert isinstance(raw, torch.optim.SGD) and raw.defaults["momentum"] == 0.9
    model = TinyRegressor()
    with pytest.raises(ValueError, match="not both"):
        Trainer(
            model=model,
            args=args(tmp_path),
            optimizers=(torch.optim.SGD(model.parameters(), lr=1), None),
            optimizer_cls_and_kwargs=(torch.optim.SGD, {"lr": 1}),
        )


def test_weight_decay_groups_follow_hf(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from tests.helpers import TokenModel

    model = TokenModel()
    ours = Trainer(model=model, args=args(tmp_path)).get_decay_parameter_names(model)
    theirs = transformers.Trainer(
        model=model, args=transformers.TrainingArguments(str(tmp_path), use_cpu=True, report_to="none")
    ).get_decay_parameter_names(model)
    assert sorted(ours) == sorted(theirs) and "head.bias" not in ours and "norm.weight" not in ours


def test_unused_columns_are_dropped_and_an_unusable_dataset_is_named(tmp_path: Path) -> None:
    rows = [{**r, "comment": "ignored", "id": i} for i, r in enumerate(regression_rows(8))]
    assert Trainer(model=TinyRegressor(), args=args(tmp_path, max_steps=2), train_dataset=rows).train().global_step == 2
    bad = [{"pixels": torch.zeros(8), "target": 1} for _ in range(8)]
    with pytest.raises(ValueError, match=r"lack the model.s input column\(s\) \[.x.\].*\[.pixels., .target.\]"):
        Trainer(model=TinyRegressor(), args=args(tmp_path, max_steps=2), train_dataset=bad).train()


def test_model_without_loss_gets_a_helpful_error(tmp_path: Path) -> None:
    rows = [{"x": r["x"]} for r in regression_rows(8)]
    with pytest.raises(Exception, match="returned no loss"):
        Trainer(model=TinyRegressor(), args=args(tmp_path, max_steps=1), train_dataset=rows).train()


def test_iterable_dataset_needs_max_steps(tmp_path: Path) -> None:
    class Stream(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
        def __iter__(self) -> Any:
            return iter(regression_rows(64))

    trainer = Trainer(model=TinyRegressor(), args=args(tmp_path, max_steps=-1), train_dataset=Stream())
    with pytest.raises(ValueError, match="max_steps"):
        trainer.train()
    streamed = Trainer(model=TinyRegressor(), args=args(tmp_path, max_steps=5), train_dataset=Stream())
    assert streamed.train().global_step == 5


def test_training_steps_after_an_evaluation_run_every_module_in_train_mode(tmp_path: Path) -> None:
    """The per-step train() shortcut must still restore train mode that evaluation switched off."""
    modes: list[bool] = []

    class Probe(TrainerCallback):
        def on_substep_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            modes.append(all(m.training for m in model.modules()))

    trainer = Trainer(
        model=TinyRegressor(dropout=0.5),
        args=args(tmp_path, gradient_accumulation_steps=2, max_steps=4, eval_strategy="steps", eval_steps=1),
        train_dataset=regression_rows(40),
        eval_dataset=regression_rows(4),
        callbacks=[Probe()],
    )
    trainer.train()
    assert modes == [True] * 4
    assert not trainer.model.training  # the last evaluation left eval mode, so the check had work to do
