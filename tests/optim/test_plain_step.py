"""The fused default training step (optim/plain_step.py): taken only when nothing overrides or hears
the layers it stands in for, and then the same run, bit for bit, as HF's layered chain."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from statetrain import Trainer, TrainerCallback, TrainingArguments
from statetrain.trainer.training_step import TrainingStepMixin
from tests.helpers import TinyRegressor, TokenModel, regression_rows, token_rows

LAYERED = TrainingStepMixin.training_step.__code__


@contextmanager
def counting_layered_steps() -> Iterator[list[int]]:
    """Count calls of the default ``training_step`` (the layered chain) while the block runs."""
    calls = [0]

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code is LAYERED:
            calls[0] += 1

    sys.setprofile(profile)
    try:
        yield calls
    finally:
        sys.setprofile(None)


def make(tmp_path: Path, fast: bool, tokens: bool = False, trainer_class: type = Trainer, **overrides: Any) -> Trainer:
    options: dict[str, Any] = dict(
        output_dir=str(tmp_path / ("fast" if fast else "layered")),
        per_device_train_batch_size=4,
        num_train_epochs=2,
        learning_rate=0.05,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=3,
    )
    options.update(overrides)
    torch.manual_seed(0)
    model = TokenModel() if tokens else TinyRegressor(dropout=0.2)
    trainer = trainer_class(
        model=model,
        args=TrainingArguments(**options),
        train_dataset=token_rows(24) if tokens else regression_rows(24),
    )
    trainer.fast_path = fast
    return trainer


def outcome(trainer: Trainer) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    logs = [
        {k: v for k, v in e.items() if k not in ("train_runtime",) and "per_second" not in k}
        for e in trainer.state.log_history
    ]
    return [p.detach().clone() for p in trainer.model.parameters()], logs


@pytest.mark.parametrize(
    ("tokens", "accumulation"),
    [(False, 1), (True, 1), (True, 3)],
    ids=["plain-loss", "loss-kwargs", "loss-kwargs-accumulated"],
)
def test_the_fused_step_runs_instead_of_the_chain_and_trains_bit_for_bit_alike(
    tmp_path: Path, tokens: bool, accumulation: int
) -> None:
    results = []
    for fast in (True, False):
        trainer = make(tmp_path, fast, tokens=tokens, gradient_accumulation_steps=accumulation)
        with counting_layered_steps() as calls:
            trainer.train()
        micro_batches = trainer.state.global_step * accumulation
        assert calls[0] == (0 if fast else micro_batches)
        results.append(outcome(trainer))
    (fast_params, fast_logs), (layered_params, layered_logs) = results
    assert fast_logs == layered_logs
    for a, b in zip(fast_params, layered_params, strict=True):
        assert torch.equal(a, b)


def test_an_override_on_the_class_or_the_instance_keeps_the_layered_chain(tmp_path: Path) -> None:
    class OwnLoss(Trainer):
        def compute_loss(
            self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch) * 1.0

    subclassed = make(tmp_path / "a", True, trainer_class=OwnLoss)
    subclassed.train()
    assert subclassed.run_context is not None and subclassed.run_context.micro_step is None

    patched = make(tmp_path / "b", True)
    seen: list[int] = []
    original = patched.training_step

    def training_step(model: Any, inputs: Any, num_items_in_batch: Any = None) -> torch.Tensor:
        seen.append(1)
        return original(model, inputs, num_items_in_batch)

    patched.training_step = training_step  # type: ignore[method-assign]
    patched.train()
    assert patched.run_context is not None and patched.run_context.micro_step is None
    assert len(seen) == patched.state.global_step


def test_a_callback_that_hears_a_step_event_gets_every_micro_batch_even_added_mid_run(tmp_path: Path) -> None:
    class Counter(TrainerCallback):
        def __init__(self) -> None:
            self.forwards = 0

        def on_after_forward(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.forwards += 1

    from_start = Counter()
    trainer = make(tmp_path / "a", True)
    trainer.add_callback(from_start)
    trainer.train()
    assert trainer.run_context is not None and trainer.run_context.micro_step is not None
    assert from_start.forwards == trainer.state.global_step

    late = Counter()

    class AddLate(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 2:
                later.add_callback(late)

    later = make(tmp_path / "b", True)
    later.add_callback(AddLate())
    later.train()
    assert late.forwards == later.state.global_step - 2


def test_flops_are_still_counted_for_a_model_that_counts_them_and_the_sync_flag_follows_the_window(
    tmp_path: Path,
) -> None:
    class Counted(TinyRegressor):
        def floating_point_ops(self, inputs: Any) -> float:
            return 7.0

    flags: list[tuple[str, bool]] = []

    class SyncFlags(TrainerCallback):
        def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            flags.append(("substep", trainer.accelerator.sync_gradients))

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            flags.append(("step", trainer.accelerator.sync_gradients))

    torch.manual_seed(0)
    trainer = Trainer(
        model=Counted(),
        args=TrainingArguments(
            output_dir=str(tmp_path),
            per_device_train_batch_size=4,
            gradient_accumulation_steps=3,
            num_train_epochs=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=True,
        ),
        train_dataset=regression_rows(24),
        callbacks=[SyncFlags()],
    )
    trainer.train()
    assert trainer.state.total_flos == 7.0 * 6
    assert flags == [("substep", False), ("substep", False), ("step", True)] * 2


@pytest.mark.parametrize("listened", [False, True], ids=["nobody-hears-step-begin", "a-listener"])
def test_step_begin_clears_hf_flags_with_or_without_a_listener(tmp_path: Path, listened: bool) -> None:
    """A flag the flow cannot act on yet (should_log set in on_log, before the step moves) is cleared
    at the next step begin, as HF's CallbackHandler does; without a listener no event is fired."""

    class LogAgain(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            control.should_log = True

    class HearsStepBegin(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            pass

    trainer = make(tmp_path, True, logging_steps=2, num_train_epochs=1)
    trainer.add_callback(LogAgain())
    if listened:
        trainer.add_callback(HearsStepBegin())
    trainer.train()
    logged_steps = [e["step"] for e in trainer.state.log_history if "loss" in e]
    assert logged_steps == [2, 4, 6]


def test_a_flow_callback_subclass_that_overrides_a_rule_gets_hfs_references(tmp_path: Path) -> None:
    """The built-in flow rules are called without HF's keyword references (they read none); an
    override is called with them, as HF's CallbackHandler calls every callback."""
    from statetrain.callbacks.flow import DefaultFlowCallback

    seen: list[set[str]] = []

    class OwnFlow(DefaultFlowCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            seen.append(set(kwargs))
            return super().on_step_end(args, state, control, **kwargs)

    trainer = make(tmp_path, True, num_train_epochs=1, logging_steps=2)
    trainer.remove_callback(DefaultFlowCallback)
    trainer.add_callback(OwnFlow())
    trainer.train()
    assert len(seen) == trainer.state.global_step
    assert all({"model", "optimizer", "lr_scheduler", "train_dataloader"} <= keys for keys in seen)
    assert [e["step"] for e in trainer.state.log_history if "loss" in e] == [2, 4, 6]


def test_one_batch_windows_skip_get_batch_samples_unless_it_is_overridden(tmp_path: Path) -> None:
    fetch = TrainingStepMixin.get_batch_samples.__code__
    calls = [0]

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code is fetch:
            calls[0] += 1

    counts = {}
    for fast in (True, False):
        trainer = make(tmp_path / str(fast), fast, num_train_epochs=1)
        calls[0] = 0
        sys.setprofile(profile)
        try:
            trainer.train()
        finally:
            sys.setprofile(None)
        counts[fast] = calls[0]
    assert counts == {True: 0, False: 6}

    class OwnFetch(Trainer):
        def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> Any:
            fetched.append(num_batches)
            return super().get_batch_samples(epoch_iterator, num_batches, device)

    fetched: list[int] = []
    own = make(tmp_path / "own", True, trainer_class=OwnFetch, num_train_epochs=1)
    own.train()
    assert own.state.global_step == 6 and fetched == [1] * 6  # the override serves every window

    # a fetch_window set on the step state itself (not its class) serves every window too
    instance = make(tmp_path / "instance", True, num_train_epochs=1)
    step_state = instance.machine.states["step"]
    default_fetch = step_state.fetch_window
    windows: list[int] = []

    def own_fetch(run: Any, size: int) -> Any:
        windows.append(size)
        return default_fetch(run, size)

    step_state.fetch_window = own_fetch  # type: ignore[method-assign]
    instance.train()
    assert instance.state.global_step == 6 and windows == [1] * 6
