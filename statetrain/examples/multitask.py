"""Round-robin multi-task training over several datasets, one task per optimizer step.

The default machine with its ``step`` state replaced: :class:`RoundRobinStepState` draws each
accumulation window from the next task in turn (task ``global_step % len(tasks)``), from that
task's own shuffled pass over its dataset. Each task's position (its pass and how many batches of
it were consumed) is persisted in the run's custom state, and a pass's order is a pure function
of the seed, the task and the pass number, so a resumed run continues every task exactly where
it stopped without reading a skipped batch.

An epoch is as many micro-batches as the ``train_dataset`` given to the Trainer yields (pass the
concatenation of the tasks to make one epoch one pass over all of them on average).

The example is written for one process: the task cursors do not shard the data across ranks, so
under several processes every rank would draw the same batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from statetrain.engine.default_machine import default_machine
from statetrain.engine.machine import MachineSpec
from statetrain.states.step import StepState

if TYPE_CHECKING:
    from statetrain.context.run import Run

__all__ = ["RoundRobinStepState", "TwoHeadModel", "multitask_machine", "task_order"]


def task_order(seed: int, task_index: int, pass_index: int, length: int) -> list[int]:
    """The sample order of one pass over one task: reproducible from three numbers alone."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + task_index * 10_007 + pass_index)
    return torch.randperm(length, generator=generator).tolist()


class RoundRobinStepState(StepState):
    """``step`` whose windows come from the tasks in turn; adds ``task`` (its index) to every batch."""

    def __init__(self, tasks: Mapping[str, Sequence[dict[str, Any]]], task_key: str = "task") -> None:
        if len(tasks) < 2:
            raise ValueError(f"RoundRobinStepState needs at least two tasks, got {list(tasks)}")
        for name, dataset in tasks.items():
            if len(dataset) == 0:
                raise ValueError(f"task {name!r} has an empty dataset")
        self.tasks = dict(tasks)
        self.task_index = {name: index for index, name in enumerate(self.tasks)}
        self.task_key = task_key
        self._orders: dict[str, tuple[int, list[int]]] = {}
        """Per task, the pass whose order is cached and that order (drawn once per pass, not per batch)."""

    def setup(self, run: Run) -> None:
        self._orders.clear()  # a new train() call may bring another seed
        positions = run.custom_state(self.name)
        for name in self.tasks:
            positions.setdefault(name, {"pass": 0, "batches": 0})
        unknown = sorted(set(positions) - set(self.tasks))
        if unknown:
            raise ValueError(f"the run's round-robin state names tasks {unknown} that this machine does not have")

    def current_task(self, run: Run) -> str:
        return list(self.tasks)[run.state.global_step % len(self.tasks)]

    def fetch_window(self, run: Run, size: int) -> tuple[list[Any], Any]:
        name = self.current_task(run)
        window = [self._next_batch(run, name) for _ in range(size)]
        # the Trainer's own window handling: item counts, per-micro-batch loss weights
        return run.trainer.get_batch_samples(iter(window), size, run.device)

    def _next_batch(self, run: Run, name: str) -> dict[str, Any]:
        dataset = self.tasks[name]
        size = run.trainer._train_batch_size
        position = run.custom_state(self.name)[name]
        batches_per_pass = -(-len(dataset) // size)
        if position["batches"] >= batches_per_pass:
            position["pass"] += 1
            position["batches"] = 0
        cached = self._orders.get(name)
        if cached is None or cached[0] != position["pass"]:
            order = task_order(run.args.seed, self.task_index[name], position["pass"], len(dataset))
            cached = self._orders[name] = (position["pass"], order)
        start = position["batches"] * size
        rows = [dataset[i] for i in cached[1][start : start + size]]
        position["batches"] += 1
        batch = dict(run.trainer.data_collator(rows))
        batch[self.task_key] = torch.tensor(self.task_index[name])
        return batch


class TwoHeadModel(nn.Module):
    """A shared trunk and one classification head per task; ``task`` picks the head."""

    def __init__(self, d_in: int = 8, hidden: int = 16, classes: Sequence[int] = (4, 3)) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(hidden, c) for c in classes)
        self.tasks_seen: list[int] = []

    def forward(self, x: torch.Tensor, task: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        index = int(task)
        if self.training:
            self.tasks_seen.append(index)
        logits = self.heads[index](self.trunk(x))
        out: dict[str, Any] = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


def multitask_machine(tasks: Mapping[str, Sequence[dict[str, Any]]]) -> MachineSpec:
    """The default machine, its ``step`` drawing windows round-robin from ``tasks``."""
    return default_machine().replace_state(RoundRobinStepState(tasks))
