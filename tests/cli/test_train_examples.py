"""The example configs train from the command line; a run preempted by SIGTERM resumes with --resume."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any, ClassVar

import pytest
from safetensors.torch import load_file

from statetrain import TrainerCallback
from statetrain.cli import main as cli_main
from statetrain.context.preemption import PREEMPTION_EXIT_CODE
from statetrain.reports import read_run, summarize

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "configs"


class SigtermAt(TrainerCallback):
    """Named from a config's ``callbacks``: sends this process SIGTERM at one step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def history(run_dir: Path) -> list[dict[str, Any]]:
    return json.loads((run_dir / "trainer_state.json").read_text())["log_history"]


def final_weights(run_dir: Path) -> dict[str, Any]:
    newest = max(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return load_file(str(next(newest.glob("model*.safetensors"))))


@pytest.mark.slow
def test_digits_config_trains_and_resumes_bit_exactly_after_sigterm(tmp_path: Path) -> None:
    config = str(EXAMPLES / "digits-mlp.yaml")
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert cli_main(["train", config, "--set", f"args.output_dir={whole}"]) == 0
    logs = history(whole)
    accuracies = [e["eval_accuracy"] for e in logs if "eval_accuracy" in e]
    assert len(accuracies) == 4 and accuracies[-1] > 0.9

    stop = [
        "--set",
        f"args.output_dir={split}",
        "--set",
        "callbacks=[{factory: tests.cli.test_train_examples:SigtermAt, kwargs: {step: 30}}]",
    ]
    assert cli_main(["train", config, *stop]) == PREEMPTION_EXIT_CODE
    assert (split / "checkpoint-30").is_dir()
    assert cli_main(["train", config, "--set", f"args.output_dir={split}", "--resume"]) == 0

    losses = [[e["loss"] for e in history(d) if "loss" in e] for d in (whole, split)]
    assert losses[0] == losses[1]
    a, b = final_weights(whole), final_weights(split)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


@pytest.mark.slow
def test_tiny_gpt2_config_trains_from_a_local_text_file_and_tokenizer(tmp_path: Path) -> None:
    out = tmp_path / "gpt2"
    assert cli_main(["train", str(EXAMPLES / "tiny-gpt2.yaml"), "--set", f"args.output_dir={out}"]) == 0
    logs = history(out)
    losses = [e["loss"] for e in logs if "loss" in e]
    evals = [e["eval_loss"] for e in logs if "eval_loss" in e]
    assert len(losses) == 6 and losses[-1] < losses[0] * 0.7
    assert len(evals) == 2 and evals[1] < evals[0]
    assert cli_main(["summary", str(out)]) == 0
    assert cli_main(["plot", str(out)]) == 0
    assert (out / "plots" / "eval_loss.png").is_file()


class ReadsTheRunWhileItGoes(TrainerCallback):
    """Named from a config: at step 5, reads the run folder as `statetrain summary` would."""

    seen: ClassVar[list[dict[str, Any]]] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 5:
            type(self).seen.append(summarize(read_run(args.output_dir)))


def test_a_running_train_command_can_be_summarized(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        "model: {factory: tests.helpers:TinyRegressor}\n"
        "data: {train: {factory: tests.helpers:regression_rows, kwargs: {n: 64}}}\n"
        "callbacks: [tests.cli.test_train_examples:ReadsTheRunWhileItGoes]\n"
        f"args: {{output_dir: {tmp_path / 'out'}, max_steps: 8, logging_steps: 2, per_device_train_batch_size: 8,\n"
        "       save_strategy: 'no', disable_tqdm: true, use_cpu: true}\n"
    )
    assert cli_main(["train", str(config)]) == 0
    live = ReadsTheRunWhileItGoes.seen[-1]
    assert live["global_step"] == 4 and live["status"].startswith("not finished")
    assert summarize(read_run(tmp_path / "out"))["status"] == "finished"


def test_resume_without_a_checkpoint_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "empty"
    assert cli_main(["train", str(EXAMPLES / "digits-mlp.yaml"), "--set", f"args.output_dir={out}", "--resume"]) == 1
    assert f"cannot resume: No valid checkpoint found in output directory ({out})" in capsys.readouterr().err
