"""HF-style scripts with one import changed (issue 13, item 8): run once with transformers and once with
statetrain, then compare ``log_history``, the returned metrics and the files in ``output_dir``.

The only differences allowed are the documented ones (docs/migration.md): timing fields; HF's pickle
files are statetrain's safetensors + JSON trees (``optimizer.pt`` -> ``optimizer.json`` +
``optimizer.safetensors``, ``training_args.bin`` -> ``training_args.json``) and a checkpoint also has
``engine_state.json`` and ``statetrain_manifest.json``; after a resume ``train_loss`` is the mean over
the whole run (HF's covers only the resumed part).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest
import transformers

import statetrain
from statetrain.checkpoint.output_lock import LOCK_NAME
from tests.parity.scripts.hf_style import (
    causal_lm_with_resume,
    compute_loss_override,
    parse_command_line,
    text_classification,
)

pytestmark = pytest.mark.slow

TREES = ("optimizer", "scheduler", "scaler", "rng_state")
STATETRAIN_ONLY = {"engine_state.json", "statetrain_manifest.json"}
NOT_YET = {"generation_config.json"}
"""HF writes it for a generative model; statetrain's save_model gains it with issue 13 item 3."""


def untimed(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if not k.endswith(("_runtime", "_per_second"))}


def assert_close(ours: Any, theirs: Any, where: str) -> None:
    if isinstance(theirs, dict):
        assert sorted(ours) == sorted(theirs), where
        for key in theirs:
            assert_close(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(theirs, float) or isinstance(ours, float):
        assert math.isclose(ours, theirs, rel_tol=1e-5, abs_tol=1e-6), (where, ours, theirs)
    else:
        assert ours == theirs, (where, ours, theirs)


def assert_same_history(ours: list[dict[str, Any]], theirs: list[dict[str, Any]], skip: tuple[str, ...] = ()) -> None:
    assert len(ours) == len(theirs)
    for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        a, b = untimed(a), untimed(b)
        for key in skip:
            a.pop(key, None), b.pop(key, None)
        assert_close(a, b, f"log_history[{index}]")


def as_statetrain(name: str) -> set[str]:
    """HF's name -> what statetrain writes instead (a pickle becomes a JSON + safetensors tree)."""
    stem, _, suffix = name.rpartition(".")
    if name == "training_args.bin":
        return {"training_args.json"}
    if suffix in ("pt", "pth") and (stem in TREES or stem.startswith("rng_state")):
        return {f"{stem}.json", f"{stem}.safetensors"}
    return {name}


def assert_same_files(ours: Path, theirs: Path) -> None:
    """Same folders; in each, HF's files under statetrain's names plus statetrain's own two."""
    assert sorted(n for n in os.listdir(ours) if n != LOCK_NAME) == sorted(os.listdir(theirs))  # + the run lock
    for folder in sorted(os.listdir(theirs)):
        if not (theirs / folder).is_dir():
            continue
        expected = set().union(*(as_statetrain(n) for n in os.listdir(theirs / folder)))
        got = set(os.listdir(ours / folder)) - STATETRAIN_ONLY
        assert got in (expected, expected - NOT_YET), (folder, sorted(got ^ expected))


def run_both(script: Any, tmp_path: Path) -> tuple[tuple[Any, dict[str, Any]], tuple[Any, dict[str, Any]]]:
    return script(transformers, str(tmp_path / "hf")), script(statetrain, str(tmp_path / "st"))


def test_text_classification_with_best_model_and_early_stopping(tmp_path: Path) -> None:
    (hf, hf_metrics), (ours, our_metrics) = run_both(text_classification, tmp_path)
    assert hf.state.global_step < hf.state.max_steps, "early stopping should have ended the HF run"
    assert_same_history(ours.state.log_history, hf.state.log_history)
    assert_close({k: untimed(v) for k, v in our_metrics.items()}, {k: untimed(v) for k, v in hf_metrics.items()}, "m")
    assert Path(ours.state.best_model_checkpoint).name == Path(hf.state.best_model_checkpoint).name
    assert_same_files(tmp_path / "st", tmp_path / "hf")


def test_causal_lm_with_accumulation_cosine_and_resume(tmp_path: Path) -> None:
    (hf, hf_metrics), (ours, our_metrics) = run_both(causal_lm_with_resume, tmp_path)
    assert_same_history(ours.state.log_history[:-1], hf.state.log_history[:-1])
    skip = ("train_loss",)  # documented: statetrain's covers the whole run, HF's the resumed part
    assert_same_history(ours.state.log_history[-1:], hf.state.log_history[-1:], skip)
    no_loss = {"train_loss": 0.0}
    assert_close(untimed(our_metrics["train"]) | no_loss, untimed(hf_metrics["train"]) | no_loss, "metrics")
    assert_same_files(tmp_path / "st", tmp_path / "hf")


def test_compute_loss_override(tmp_path: Path) -> None:
    (hf, hf_metrics), (ours, our_metrics) = run_both(compute_loss_override, tmp_path)
    assert_same_history(ours.state.log_history, hf.state.log_history)
    assert_close(untimed(our_metrics["train"]), untimed(hf_metrics["train"]), "metrics")


def test_hf_argument_parser_over_statetrain_arguments(tmp_path: Path) -> None:
    argv = [
        "--output_dir", str(tmp_path), "--hidden", "24", "--learning_rate", "3e-4", "--max_steps", "7",
        "--lr_scheduler_type", "cosine", "--warmup_steps", "2", "--eval_strategy", "steps", "--eval_steps", "5",
        "--gradient_accumulation_steps", "4", "--bf16", "false", "--report_to", "none", "--use_cpu",
    ]  # fmt: skip
    hf_model, hf_args = parse_command_line(transformers, argv)
    our_model, our_args = parse_command_line(statetrain, argv)
    assert our_model == hf_model and our_model.hidden == 24
    assert isinstance(our_args, statetrain.TrainingArguments)
    ours, theirs = our_args.to_dict(), hf_args.to_dict()
    for name in ("learning_rate", "max_steps", "lr_scheduler_type", "warmup_steps", "eval_strategy", "eval_steps"):
        assert ours[name] == theirs[name], name
    assert our_args.gradient_accumulation_steps == hf_args.gradient_accumulation_steps == 4
