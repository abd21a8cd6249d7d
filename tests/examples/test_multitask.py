"""The round-robin multi-task example: tasks alternate per step, each task's passes cover it, resume is exact."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import ConcatDataset

from statetrain import Trainer, TrainingArguments
from statetrain.examples.multitask import RoundRobinStepState, TwoHeadModel, multitask_machine, task_order
from statetrain.testing import assert_resumes_bit_exactly
from tests.helpers import regression_rows


def tasks() -> dict[str, list[dict[str, torch.Tensor]]]:
    return {"sentiment": regression_rows(24, classes=4, seed=1), "topic": regression_rows(40, classes=3, seed=2)}


def make_trainer(output_dir: str, accumulation: int = 1, epochs: int = 2) -> Trainer:
    torch.manual_seed(0)
    data = tasks()
    args = TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=accumulation,
        num_train_epochs=epochs,
        learning_rate=0.05,
        logging_steps=2,
        save_strategy="steps",
        save_steps=3,
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        seed=5,
    )
    return Trainer(
        model=TwoHeadModel(),
        args=args,
        train_dataset=ConcatDataset(list(data.values())),
        machine=multitask_machine(data),
    )


def test_tasks_alternate_per_step_and_each_pass_covers_its_task(tmp_path: Path) -> None:
    trainer = make_trainer(str(tmp_path), accumulation=2, epochs=3)
    model = trainer.model
    assert isinstance(model, TwoHeadModel)
    trainer.train()
    steps = trainer.state.global_step
    assert steps == 3 * 4  # 64 rows / 8 = 8 micro-batches per epoch, 2 per window
    # two micro-batches per window, all from one task, tasks taking turns
    assert model.tasks_seen == [step % 2 for step in range(steps) for _ in range(2)]
    # sentiment (3 batches a pass) is at its 4th pass after 12 micro-batches; topic (5) at its 3rd
    positions = trainer.run_context.engine.custom["step"]
    assert positions == {"sentiment": {"pass": 3, "batches": 3}, "topic": {"pass": 2, "batches": 2}}


def test_one_pass_visits_every_sample_of_its_task_once() -> None:
    for task_index in range(2):
        for pass_index in range(3):
            order = task_order(5, task_index, pass_index, 40)
            assert Counter(order) == Counter(range(40))
    assert task_order(5, 0, 0, 40) != task_order(5, 0, 1, 40) != task_order(5, 1, 0, 40)


def test_both_heads_learn(tmp_path: Path) -> None:
    trainer = make_trainer(str(tmp_path), epochs=6)
    data = tasks()

    def mean_loss(task: int) -> float:
        rows = data[list(data)[task]]
        x = torch.stack([r["x"] for r in rows])
        y = torch.stack([r["labels"] for r in rows])
        with torch.no_grad():
            return float(trainer.model(x, torch.tensor(task), y)["loss"])

    trainer.model.eval()
    before = [mean_loss(0), mean_loss(1)]
    trainer.train()
    trainer.model.eval()
    after = [mean_loss(0), mean_loss(1)]
    assert after[0] < before[0] - 0.1 and after[1] < before[1] - 0.1, (before, after)


@pytest.mark.parametrize(("accumulation", "cut"), [(1, 3), (1, 6), (2, 3)])
def test_resume_is_bit_exact(tmp_path: Path, accumulation: int, cut: int) -> None:
    assert_resumes_bit_exactly(lambda d: make_trainer(d, accumulation=accumulation), cut, tmp_path)


def test_a_single_task_is_refused() -> None:
    with pytest.raises(ValueError, match="at least two tasks"):
        RoundRobinStepState({"only": regression_rows(4)})
