"""A signal during a checkpoint save lets the save finish; the run then stops on that checkpoint.

The SIGTERM is sent from inside the save (by the processing class's ``save_pretrained``, which the
save calls after writing the weights and before the optimizer, schedule, RNG and state files).
The checkpoint must come out complete and verified, be the one ``TrainingPreempted`` names, and
resume to the same result as a run that was never signalled.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from statetrain import Trainer, TrainerCallback, TrainingArguments
from statetrain.checkpoint.output_lock import LOCK_NAME
from statetrain.checkpoint.store import verify_checkpoint
from statetrain.context.preemption import TrainingPreempted
from tests.helpers import TinyRegressor, regression_rows


class SignallingProcessor:
    """A processing class whose ``save_pretrained`` sends SIGTERM once, in the middle of the save."""

    def __init__(self) -> None:
        self.sent_at: int | None = None
        self.step = lambda: -1

    def save_pretrained(self, folder: str) -> None:
        if self.sent_at is None and self.step() == 2:
            self.sent_at = self.step()
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)  # launchers often send two
        Path(folder, "processor.json").write_text("{}", encoding="utf-8")


class Record(TrainerCallback):
    def __init__(self) -> None:
        self.saves: list[int] = []
        self.steps: list[int] = []

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.saves.append(state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.steps.append(state.global_step)


def build(out: Path, processor: Any = None, callbacks: list[Any] | None = None) -> Trainer:
    torch.manual_seed(0)
    args = TrainingArguments(
        str(out),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_steps=6,
        learning_rate=0.05,
        save_strategy="steps",
        save_steps=2,
        logging_steps=1,
        use_cpu=True,
        disable_tqdm=True,
        report_to="none",
    )
    return Trainer(
        model=TinyRegressor(dropout=0.2),
        args=args,
        train_dataset=regression_rows(40),
        processing_class=processor,
        callbacks=callbacks,
    )


def untimed(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if not k.endswith(("runtime", "per_second"))} for e in history]


def test_sigterm_mid_save_finishes_the_save_then_stops_on_it(tmp_path: Path) -> None:
    processor, record = SignallingProcessor(), Record()
    trainer = build(tmp_path / "cut", processor, [record])
    processor.step = lambda: trainer.state.global_step
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingPreempted) as stop:
        trainer.train()
    assert processor.sent_at == 2
    checkpoint = tmp_path / "cut" / "checkpoint-2"
    assert stop.value.checkpoint == checkpoint
    assert stop.value.global_step == 2
    assert record.saves == [2]  # the save completed (on_save), and it is the only one
    assert record.steps == [1, 2]  # no optimizer step after the signal
    manifest = verify_checkpoint(checkpoint)  # complete: every file, sizes and checksums
    for name in ("model.safetensors", "optimizer.safetensors", "scheduler.json", "rng_state.json"):
        assert name in manifest["files"], name
    assert "processor.json" in manifest["files"]
    assert sorted(p.name for p in (tmp_path / "cut").iterdir() if p.name != LOCK_NAME) == [
        "checkpoint-2"
    ]  # no .tmp- left
    assert signal.getsignal(signal.SIGTERM) is before

    resumed = build(tmp_path / "cut")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    reference = build(tmp_path / "full")
    reference.train()
    for a, b in zip(reference.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert untimed(resumed.state.log_history) == untimed(reference.state.log_history)
