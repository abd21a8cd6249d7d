"""An LR range test as a state inserted before the first epoch.

``lr_range_test`` sweeps the learning rate geometrically over a few mini-batches (Smith's range
test), picks the rate where the smoothed loss was lowest divided by ``divisor`` (fastai's
``lr_min``), then puts the model, the optimizer and the random generators back exactly as they
were and installs the rate found as the schedule's base rate. Training after it is therefore
bit-identical to a run started with ``learning_rate`` set to the rate found.

The result lives in the run's persisted custom state and a checkpoint is written right after
the test (when saving is on), so a resumed run never repeats it.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader

from statetrain.engine.default_machine import BUDGET_SPENT, SHOULD_SAVE, default_machine
from statetrain.engine.machine import MachineSpec, Transition
from statetrain.states.base import State

if TYPE_CHECKING:
    from statetrain.context.run import Run

__all__ = ["LRRangeTestState", "install_learning_rate", "lr_range_test_machine"]


def install_learning_rate(run: Run, learning_rate: float) -> None:
    """Make ``learning_rate`` the base rate of the optimizer and its schedule, at the schedule's current step."""
    optimizer = getattr(run.optimizer, "optimizer", run.optimizer)
    schedule = run.lr_scheduler
    for group in optimizer.param_groups:
        group["initial_lr"] = learning_rate
    schedule.base_lrs = [learning_rate] * len(optimizer.param_groups)
    lambdas = getattr(schedule, "lr_lambdas", None)
    for index, group in enumerate(optimizer.param_groups):
        if lambdas is not None:
            group["lr"] = learning_rate * lambdas[index](schedule.last_epoch)
        else:
            group["lr"] = learning_rate
    schedule._last_lr = [group["lr"] for group in optimizer.param_groups]


class LRRangeTestState(State):
    """Sweep, choose, restore, install; skipped when the run (or the checkpoint it resumed) already has a result."""

    name = "lr_range_test"
    reads = ("model", "optimizer", "lr_scheduler", "trainer.train_dataset")
    writes = ("custom_state.lr_range_test", "optimizer.param_groups", "lr_scheduler.base_lrs", "control.should_save")

    def __init__(
        self,
        min_lr: float = 1e-5,
        max_lr: float = 1.0,
        num_steps: int = 24,
        divisor: float = 10.0,
        smoothing: float = 0.5,
    ) -> None:
        if not 0 < min_lr < max_lr:
            raise ValueError(f"LRRangeTestState needs 0 < min_lr < max_lr, got min_lr={min_lr}, max_lr={max_lr}")
        if num_steps < 2:
            raise ValueError(f"LRRangeTestState.num_steps must be at least 2, got {num_steps}")
        self.min_lr, self.max_lr, self.num_steps = min_lr, max_lr, num_steps
        self.divisor, self.smoothing = divisor, smoothing

    def rates(self) -> list[float]:
        ratio = (self.max_lr / self.min_lr) ** (1 / (self.num_steps - 1))
        return [self.min_lr * ratio**i for i in range(self.num_steps)]

    def run(self, run: Run) -> None:
        memo = run.custom_state(self.name)
        if "found_lr" in memo:
            return
        model = run.model
        optimizer = getattr(run.optimizer, "optimizer", run.optimizer)
        saved_model = copy.deepcopy(model.state_dict())
        saved_optimizer = copy.deepcopy(optimizer.state_dict())
        with torch.random.fork_rng(devices=[]):  # the sweep draws nothing from the training's generators
            rates, losses = self._sweep(run, optimizer)
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_optimizer)
        model.zero_grad(set_to_none=True)
        best = min(range(len(losses)), key=losses.__getitem__)
        found = rates[best] / self.divisor
        memo.update(found_lr=found, rates=rates, losses=losses)
        install_learning_rate(run, found)
        save_strategy = str(getattr(run.args.save_strategy, "value", run.args.save_strategy))
        run.control.should_save = save_strategy != "no"

    def _sweep(self, run: Run, optimizer: torch.optim.Optimizer) -> tuple[list[float], list[float]]:
        trainer, model = run.trainer, run.model
        dataset, collator = trainer._apply_column_removal(trainer.train_dataset, "the LR range test")
        loader = DataLoader(
            dataset,
            batch_size=trainer._train_batch_size,
            shuffle=True,
            collate_fn=collator,
            generator=torch.Generator().manual_seed(run.args.seed),
        )
        batches = iter(loader)
        model.train()
        rates: list[float] = []
        losses: list[float] = []
        smoothed = 0.0
        for step, rate in enumerate(self.rates()):
            try:
                inputs = next(batches)
            except StopIteration:
                batches = iter(loader)
                inputs = next(batches)
            for group in optimizer.param_groups:
                group["lr"] = rate
            loss = trainer.compute_loss(model, trainer._prepare_inputs(inputs))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            value = float(loss.detach())
            smoothed = self.smoothing * smoothed + (1 - self.smoothing) * value
            debiased = smoothed / (1 - self.smoothing ** (step + 1))
            if not math.isfinite(debiased) or (losses and debiased > 4 * min(losses)):
                break  # diverged: larger rates only get worse
            rates.append(rate)
            losses.append(debiased)
        return rates, losses


def lr_range_test_machine(state: LRRangeTestState | None = None) -> MachineSpec:
    """The default machine with ``lr_range_test`` between ``init`` and the first epoch.

    The test runs after ``init`` unless the run has nothing left to train (a finished run resumed);
    it then takes ``init``'s own exits, after a checkpoint of what it found when saving is on.
    """
    test = state if state is not None else LRRangeTestState()
    return (
        default_machine()
        .run_after("init", test, when=~BUDGET_SPENT, trigger="find_lr")
        .with_transitions([Transition(test.name, "save", "save", (SHOULD_SAVE,))], before=test.name)
    )
