"""Launched by torchrun with 2 processes: a short run reporting to files and TensorBoard."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from statetrain import Trainer, TrainingArguments
from tests.helpers import TinyRegressor, regression_rows


def main(output_dir: str) -> None:
    args = TrainingArguments(
        output_dir=output_dir, max_steps=4, per_device_train_batch_size=4, logging_steps=1, save_strategy="no",
        report_to=["jsonl", "csv", "tensorboard"], disable_tqdm=True,
    )  # fmt: skip
    assert args.world_size == 2, f"expected 2 processes, got {args.world_size}"
    trainer = Trainer(model=TinyRegressor(), args=args, train_dataset=regression_rows(32))
    trainer.train()
    if trainer.is_world_process_zero():
        Path(output_dir, "history-rank0.json").write_text(json.dumps(trainer.state.log_history))


if __name__ == "__main__":
    main(sys.argv[1])
