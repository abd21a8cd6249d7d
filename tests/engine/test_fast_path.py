"""The fast path (compiled exit table, loader-shard bypass, direct optimizer, parameter-list
zero_grad) changes nothing a run computes, and the ``transitions`` model stays the loop's state."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from statetrain import Trainer, TrainingArguments
from statetrain.data.shard_bypass import iterate_shard, shard_is_plain
from statetrain.engine.default_machine import default_machine
from statetrain.engine.driver import drive
from statetrain.events.event import Event
from statetrain.examples.curriculum import curriculum_machine
from statetrain.optim.grad_clearing import GradClearer
from tests.helpers import TinyRegressor, regression_rows

STAGES = [regression_rows(20, seed=30 + k) for k in range(2)]


def trained(
    tmp_path: Path, fast: bool, machine: Any = None, data: Any = None, **overrides: Any
) -> tuple[Trainer, list[str]]:
    options: dict[str, Any] = dict(
        output_dir=str(tmp_path / ("fast" if fast else "full")),
        per_device_train_batch_size=3,
        gradient_accumulation_steps=2,
        num_train_epochs=3,
        learning_rate=0.05,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=5,
    )
    options.update(overrides)
    torch.manual_seed(0)
    trainer = Trainer(
        model=TinyRegressor(dropout=0.2),  # dropout: the run draws random numbers every step
        args=TrainingArguments(**options),
        train_dataset=data if data is not None else regression_rows(20),
        machine=machine,
    )
    trainer.fast_path = fast
    entered: list[str] = []

    def record(data: Any) -> None:
        # the transitions model's state is the state the driver is about to run
        assert trainer.run_context is not None
        assert trainer.run_context.machine_model.state == data.state_name
        entered.append(data.state_name)

    trainer.on(Event.ON_STATE_ENTER, record)
    trainer.train()
    return trainer, entered


def logged(trainer: Trainer) -> list[dict[str, Any]]:
    """The log history without the wall-clock figures."""
    timed = ("runtime", "per_second")
    return [{k: v for k, v in e.items() if not any(t in k for t in timed)} for e in trainer.state.log_history]


def test_the_fast_path_trains_bit_for_bit_like_full_triggers_and_wrappers(tmp_path: Path) -> None:
    fast, fast_states = trained(tmp_path, fast=True)
    full, full_states = trained(tmp_path, fast=False)
    assert fast.run_context is not None and fast.run_context.plain_loader
    assert full.run_context is not None and not full.run_context.plain_loader
    for (name, a), (_, b) in zip(fast.model.named_parameters(), full.model.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    assert logged(fast) == logged(full)
    assert fast_states == full_states
    assert fast_states.count("optimize") == fast.state.global_step == 12


def test_a_custom_machine_takes_the_fast_path_with_the_same_result(tmp_path: Path) -> None:
    fast, fast_states = trained(tmp_path, fast=True, machine=curriculum_machine(STAGES), data=STAGES[0])
    full, full_states = trained(tmp_path, fast=False, machine=curriculum_machine(STAGES), data=STAGES[0])
    assert "curriculum" in fast_states and fast_states == full_states
    for a, b in zip(fast.model.parameters(), full.model.parameters(), strict=True):
        assert torch.equal(a, b)


class RecordingModel:
    """A ``transitions`` model that records every state it is put in."""

    def __init__(self) -> None:
        self.visited: list[str] = []

    @property
    def state(self) -> str:
        return self.visited[-1]

    @state.setter
    def state(self, value: str) -> None:
        self.visited.append(value)


class RecordingTrainer(Trainer):
    """Drives the machine on a model that records every state ``transitions`` puts it in."""

    def _drive(self, run: Any) -> None:
        self.model_states = RecordingModel()
        drive(self.machine, run, compiled=self.fast_path, model=self.model_states)


def test_the_transitions_model_walks_exactly_the_states_the_driver_runs(tmp_path: Path) -> None:
    for compiled in (True, False):
        torch.manual_seed(0)
        args = TrainingArguments(
            str(tmp_path),
            per_device_train_batch_size=4,
            num_train_epochs=2,
            logging_steps=2,
            use_cpu=True,
            report_to="none",
            disable_tqdm=True,
            save_strategy="steps",
            save_steps=3,
        )
        trainer = RecordingTrainer(model=TinyRegressor(), args=args, train_dataset=regression_rows(10))
        trainer.fast_path = compiled
        ran: list[str] = []
        trainer.on(Event.ON_STATE_ENTER, lambda data, ran=ran: ran.append(data.state_name))
        trainer.train()
        assert trainer.model_states.visited == ran
        assert {"init", "epoch", "step", "accumulate", "optimize", "log", "save", "epoch_end", "done"} <= set(ran)


def test_a_deleted_transition_changes_the_compiled_run(tmp_path: Path) -> None:
    full, _ = trained(tmp_path, fast=True)
    cut, states = trained(tmp_path, fast=True, machine=default_machine().without_transition("optimize", "log"))
    assert sum("loss" in e for e in full.state.log_history) == 12
    assert [e["step"] for e in cut.state.log_history if "loss" in e] == [4, 8, 12]  # epoch-end logs only
    assert "log" in states


def test_the_loader_bypass_yields_the_shards_batches_and_random_draws(tmp_path: Path) -> None:
    def noisy_collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
        # a collator that draws random numbers: reading one batch ahead must draw in the same order
        x = torch.stack([r["x"] for r in rows])
        return {"x": x + torch.rand(x.shape), "labels": torch.stack([r["labels"] for r in rows])}

    def passes(bypass: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        trainer = Trainer(
            model=TinyRegressor(),
            args=TrainingArguments(str(tmp_path), per_device_train_batch_size=4, use_cpu=True, report_to="none"),
            train_dataset=regression_rows(10),
            data_collator=noisy_collate,
        )
        loader = trainer.get_train_dataloader()
        assert shard_is_plain(loader, trainer.accelerator)
        seen: list[torch.Tensor] = []
        for epoch in range(2):
            loader.set_epoch(epoch)
            for batch in iterate_shard(loader) if bypass else iter(loader):
                seen.append(batch["x"])
                seen.append(torch.rand(1))  # the model's draws between batches
            assert loader.end_of_dataloader
        assert loader.iteration == 2
        return seen

    assert all(torch.equal(a, b) for a, b in zip(passes(True), passes(False), strict=True))


def test_the_bypass_leaves_loaders_that_do_work_alone_and_keeps_skips(tmp_path: Path) -> None:
    from accelerate import skip_first_batches

    trainer = Trainer(
        model=TinyRegressor(),
        args=TrainingArguments(str(tmp_path), per_device_train_batch_size=4, use_cpu=True, report_to="none"),
        train_dataset=regression_rows(10),
    )
    loader = trainer.get_train_dataloader()
    assert shard_is_plain(loader, trainer.accelerator)
    several = SimpleNamespace(device=torch.device("cpu"), num_processes=2)
    assert not shard_is_plain(loader, several)  # several processes: the shard splits
    skipped = skip_first_batches(loader, 1)  # a map-style dataset skips in its batch sampler: still plain
    if shard_is_plain(skipped, trainer.accelerator):
        skipped.set_epoch(0)
        bypassed = [b["x"] for b in iterate_shard(skipped)]
        skipped.set_epoch(0)
        assert all(torch.equal(a, b["x"]) for a, b in zip(bypassed, skipped, strict=True))
    assert not shard_is_plain(loader.base_dataloader, trainer.accelerator)  # not a shard at all


def test_the_grad_clearer_matches_zero_grad_and_respects_overrides() -> None:
    class Counting(nn.Linear):
        calls = 0

        def zero_grad(self, set_to_none: bool = True) -> None:
            Counting.calls += 1
            super().zero_grad(set_to_none)

    plain, custom, other = nn.Linear(2, 2), Counting(2, 2), nn.Linear(2, 2)
    for model in (plain, custom, other):
        model(torch.ones(1, 2)).sum().backward()
    GradClearer(plain)(plain)
    assert all(p.grad is None for p in plain.parameters())
    GradClearer(custom)(custom)
    assert Counting.calls == 1 and all(p.grad is None for p in custom.parameters())
    GradClearer(plain)(other)  # a model swapped in after train() started gets its own zero_grad
    assert all(p.grad is None for p in other.parameters())


def test_events_nobody_hears_are_not_active_on_the_bus() -> None:
    from statetrain.events.bus import EventBus

    bus = EventBus()
    assert Event.ON_OPTIMIZER_STEP not in bus.active
    assert Event.ON_STEP_BEGIN in bus.active  # it clears HF flags even with no listener
    handle = bus.on(Event.ON_OPTIMIZER_STEP, lambda data: None)
    assert Event.ON_OPTIMIZER_STEP in bus.active
    bus.off(handle)
    assert Event.ON_OPTIMIZER_STEP not in bus.active


def test_the_sync_free_nan_filter_sums_exactly_like_the_host_branch() -> None:
    from statetrain.states.accumulate import add_filtered_loss

    for step_loss in (torch.tensor(0.7310), torch.tensor(float("nan")), torch.tensor(float("inf"))):
        for dtype in (torch.float32, torch.bfloat16):
            branch = torch.tensor(2.345678)
            loss = step_loss.to(dtype)
            if torch.isfinite(loss):
                branch += loss
            else:
                branch += branch / 3
            selected = torch.tensor(2.345678)
            add_filtered_loss(selected, loss, 3)
            assert torch.equal(selected, branch), (step_loss, dtype)


def test_train_does_not_import_lomo_optim_or_transformers(tmp_path: Path) -> None:
    """accelerate would import lomo_optim (and through it transformers) inside prepare() just to ask
    whether the optimizer is a LOMO one; a fresh process shows train() no longer pays for that."""
    import subprocess
    import sys

    code = f"""
import sys, torch
from statetrain import Trainer, TrainingArguments
from tests.helpers import TinyRegressor, regression_rows
args = TrainingArguments({str(tmp_path)!r}, max_steps=2, use_cpu=True, report_to="none", save_strategy="no")
Trainer(model=TinyRegressor(), args=args, train_dataset=regression_rows(8)).train()
print(sorted(m for m in ("lomo_optim", "transformers") if m in sys.modules))
"""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
