"""Two short real runs (different learning rates) whose folders the report tests read."""

from __future__ import annotations

from pathlib import Path

import pytest

from statetrain import Trainer, TrainingArguments
from tests.helpers import TinyRegressor, regression_rows


def train_run(output_dir: Path, learning_rate: float) -> Trainer:
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=12,
        per_device_train_batch_size=8,
        learning_rate=learning_rate,
        logging_steps=2,
        eval_strategy="steps",
        eval_steps=4,
        save_strategy="steps",
        save_steps=4,
        metric_for_best_model="eval_loss",
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = Trainer(
        model=TinyRegressor(),
        args=args,
        train_dataset=regression_rows(64),
        eval_dataset=regression_rows(16, seed=1),
    )
    trainer.train()
    trainer.state.save_to_json(output_dir / "trainer_state.json")
    return trainer


@pytest.fixture(scope="package")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    train_run(root / "fast", 5e-2)
    train_run(root / "slow", 1e-3)
    return root / "fast", root / "slow"
