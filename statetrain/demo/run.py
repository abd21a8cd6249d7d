"""What ``statetrain demo`` shows: a run preempted by a real SIGTERM resumes to the same bits.

Three trainings of the digits classifier with the same arguments and seed: one uninterrupted; one
that sends itself SIGTERM halfway (statetrain finishes the accumulation window, writes a
checkpoint and raises ``TrainingPreempted``); and a fresh ``Trainer`` that resumes from that
checkpoint. The resumed model's tensors are compared with ``torch.equal`` to the uninterrupted
one's. The seed is set before the model is built, so every run of the demo prints the same numbers.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from statetrain.demo.digits import DigitsClassifier, accuracy, load_digits_splits


@dataclass
class DemoResult:
    """What the demo measured and where it wrote it."""

    accuracy: float
    first_loss: float
    last_loss: float
    train_loss: float
    output_dir: Path
    global_step: int = 0
    preempted_at: int = 0
    checkpoint: Path | None = None
    bit_identical: bool = False
    tensors_compared: int = 0
    files: dict[str, Path] = field(default_factory=dict)


class _SigtermAt:
    """A callback that sends this process a real SIGTERM at one global step, as a scheduler would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def demo_arguments(output_dir: Path, epochs: float, disable_tqdm: bool, seed: int) -> Any:
    """The one set of arguments all three runs share (only ``output_dir`` differs)."""
    from statetrain import TrainingArguments

    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=epochs,
        per_device_train_batch_size=32,
        gradient_accumulation_steps=2,
        learning_rate=3e-3,
        warmup_steps=0.05,
        weight_decay=0.01,
        logging_steps=10,
        logging_first_step=True,
        save_strategy="epoch",
        save_total_limit=2,
        seed=seed,
        disable_tqdm=disable_tqdm,
        use_cpu=True,
    )


def _trainer(args: Any, rows: list[dict[str, Any]], callbacks: list[Any]) -> Any:
    from statetrain import PrinterCallback, Trainer

    torch.manual_seed(args.seed)  # the weights' initial values depend on the seed, not on the clock
    trainer = Trainer(model=DigitsClassifier(), args=args, train_dataset=rows, callbacks=callbacks)
    if args.disable_tqdm:  # the demo prints its own few lines instead of every log
        trainer.remove_callback(PrinterCallback)
    return trainer


def run_demo(
    output_dir: str | Path = "statetrain_demo_output",
    epochs: float = 8,
    disable_tqdm: bool = False,
    seed: int = 42,
) -> DemoResult:
    """Train, preempt with SIGTERM, resume, compare to an uninterrupted run; write plots and a summary."""
    from statetrain.context.preemption import TrainingPreempted

    out = Path(output_dir)
    train_rows, test_rows = load_digits_splits()
    reference = _trainer(demo_arguments(out / "uninterrupted", epochs, disable_tqdm, seed), train_rows, [])
    reference.train()
    reference.state.save_to_json(out / "uninterrupted" / "trainer_state.json")
    stop_at = max(1, reference.state.global_step // 2)

    args = demo_arguments(out, epochs, disable_tqdm, seed)
    try:
        _trainer(args, train_rows, [_SigtermAt(stop_at)]).train()
    except TrainingPreempted as stop:
        checkpoint = stop.checkpoint
    else:  # pragma: no cover - the signal always arrives
        raise RuntimeError(f"the demo's SIGTERM at step {stop_at} did not stop the run")
    resumed = _trainer(args, train_rows, [])
    output = resumed.train(resume_from_checkpoint=str(checkpoint))
    resumed.state.save_to_json(out / "trainer_state.json")

    mine, theirs = resumed.model.state_dict(), reference.model.state_dict()
    identical = mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    losses = [entry["loss"] for entry in resumed.state.log_history if "loss" in entry]
    result = DemoResult(
        accuracy=accuracy(resumed.model, test_rows),
        first_loss=losses[0],
        last_loss=losses[-1],
        train_loss=output.training_loss,
        output_dir=out,
        global_step=output.global_step,
        preempted_at=stop_at,
        checkpoint=checkpoint,
        bit_identical=identical,
        tensors_compared=len(mine),
    )
    result.files = write_reports(result)
    return result


def write_reports(result: DemoResult) -> dict[str, Path]:
    """The files the demo points at: charts, the machine's diagram, the run summary, the numbers."""
    from statetrain.engine.default_machine import default_machine
    from statetrain.reports import format_summary, plot_runs, read_run

    out = result.output_dir
    run = read_run(out)
    labels = ["preempted by SIGTERM, resumed", "uninterrupted"]
    charts = plot_runs([run, read_run(out / "uninterrupted")], out / "plots", labels)
    diagram = out / "state-diagram.mmd"
    diagram.write_text(default_machine().to_mermaid(), encoding="utf-8")
    summary = out / "summary.txt"
    summary.write_text(format_summary(run), encoding="utf-8")
    numbers = out / "demo_results.json"
    facts = {
        "held_out_accuracy": result.accuracy,
        "train_loss": result.train_loss,
        "first_logged_loss": result.first_loss,
        "last_logged_loss": result.last_loss,
        "global_step": result.global_step,
        "preempted_at_step": result.preempted_at,
        "resumed_from": str(result.checkpoint),
        "bit_identical_to_uninterrupted": result.bit_identical,
    }
    numbers.write_text(json.dumps(facts, indent=2) + "\n", encoding="utf-8")
    loss_chart = next(chart.path for chart in charts if chart.key == "loss")
    return {"plot": loss_chart, "diagram": diagram, "summary": summary, "results": numbers}
