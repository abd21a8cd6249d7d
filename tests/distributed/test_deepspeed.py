"""DeepSpeed ZeRO by configuration (``TrainingArguments.deepspeed``), on CPU processes over gloo.

Two processes started by torchrun train under DeepSpeed ZeRO-2 like one process without DeepSpeed
on the same global batch; their checkpoints hold every process's optimizer partition without a
pickle, and a resume from a mid-epoch checkpoint is bit-exact (ZeRO-2 in fp32, ZeRO-1 in bf16). A
process no launcher started runs DeepSpeed as a one-process group. Every launched test first
asserts that the world size really was 2 and that the model really was a DeepSpeed engine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from statetrain.checkpoint.deepspeed import FORMAT
from statetrain.checkpoint.store import verify_checkpoint
from statetrain.checkpoint.tensor_tree import load_tree
from tests.distributed.launching import run_launched
from tests.distributed.run_ddp import DEFAULTS, eval_datasets
from tests.distributed.test_ddp import (
    SCRIPT,
    check_launch,
    launch,
    max_difference,
    one_process_reference,
    results,
)

ADAM = {"optim": "adamw_torch", "learning_rate": 0.01}  # an optimizer with state worth partitioning
ZERO2_WINDOWS = {**ADAM, "zero_stage": 2, "batch": 2, "accumulation": 2, "evaluate": True}  # 8 rows a step
RESUMABLE = {**ADAM, "save_steps": 3, "dropout": 0.2, "diverge_rng": True}  # checkpoint-3 is mid-epoch
ZERO2_RESUMABLE = {**RESUMABLE, "zero_stage": 2}
ZERO3_RESUMABLE = {**RESUMABLE, "zero_stage": 3}
ZERO1_BF16_RESUMABLE = {**RESUMABLE, "zero_stage": 1, "bf16": True}


def deepspeed_results(out: Path) -> list[dict[str, Any]]:
    found = results(out)
    for result in found:
        assert result["wrapper"] == "DeepSpeedEngine" and result["is_deepspeed_enabled"], result
    return found


@pytest.fixture(scope="module")
def first_launch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("deepspeed")
    scenarios = [
        {**ZERO2_WINDOWS, "out": str(tmp / "zero2")},
        {**ZERO2_WINDOWS, "zero_stage": 3, "out": str(tmp / "zero3")},
        {**ZERO2_RESUMABLE, "out": str(tmp / "zero2-full"), "train_again": True},
        {**ZERO1_BF16_RESUMABLE, "out": str(tmp / "zero1-bf16-full")},
        {**ZERO3_RESUMABLE, "out": str(tmp / "zero3-full")},
    ]
    done = launch(tmp, scenarios)
    check_launch(done)
    return tmp


@pytest.fixture(scope="module")
def second_launch(first_launch: Path) -> Path:
    """New processes resume both runs from checkpoint-3; two resumes that do not fit are refused; a
    SIGTERM to one process of a ZeRO-2 run."""
    tmp = first_launch
    checkpoint = str(tmp / "zero2-full" / "checkpoint-3")
    scenarios = [
        {**ZERO2_RESUMABLE, "out": str(tmp / "zero2-resumed"), "resume": checkpoint},
        {
            **ZERO1_BF16_RESUMABLE,
            "out": str(tmp / "zero1-bf16-resumed"),
            "resume": str(tmp / "zero1-bf16-full" / "checkpoint-3"),
        },
        {**ZERO3_RESUMABLE, "out": str(tmp / "zero3-resumed"), "resume": str(tmp / "zero3-full" / "checkpoint-3")},
        {**RESUMABLE, "zero_stage": 1, "out": str(tmp / "other-stage"), "resume": checkpoint, "expect_error": True},
        {**RESUMABLE, "out": str(tmp / "no-deepspeed"), "resume": checkpoint, "expect_error": True},
        {**ADAM, "zero_stage": 2, "out": str(tmp / "signalled"), "sigterm_rank": 1, "sigterm_step": 2},
    ]
    check_launch(launch(tmp, scenarios))
    return tmp


@pytest.mark.parametrize("run", ["zero2", "zero3"])
def test_zero_in_two_processes_trains_like_one_process_without_deepspeed(
    first_launch: Path, tmp_path: Path, run: str
) -> None:
    """Micro-batches, accumulation at DeepSpeed's boundary, averaged gradients, clipping, AdamW and the
    schedule all match: the same 8 rows per step on one process give the same parameters and losses."""
    ranks = deepspeed_results(first_launch / run)
    reference = one_process_reference(tmp_path, **{**ADAM, "batch": 4})  # 8 rows a step, no accumulation
    params = load_file(str(first_launch / run / "params.safetensors"))
    worst = max_difference(params, reference)
    assert worst < 1e-6, f"parameters differ from the one-process run by {worst}"
    losses = [e["loss"] for e in ranks[0]["log_history"] if "loss" in e]
    assert losses == pytest.approx([e["loss"] for e in reference.state.log_history if "loss" in e], abs=1e-6)
    norms = [e["grad_norm"] for e in ranks[0]["log_history"] if "grad_norm" in e]
    expected_norms = [e["grad_norm"] for e in reference.state.log_history if "grad_norm" in e]
    assert norms == pytest.approx(expected_norms, rel=1e-5)  # DeepSpeed's own norm, reported as HF does
    # evaluation through the engine gathers every sample once
    expected = reference.evaluate(eval_datasets({**DEFAULTS, **ZERO2_WINDOWS}))
    for result in ranks:
        metrics = result["metrics"]
        assert metrics["eval_uneven_samples"] == expected["eval_uneven_samples"] == DEFAULTS["eval_rows"]
        for name in ("eval_uneven_accuracy", "eval_even_accuracy", "eval_even_samples"):
            assert metrics[name] == expected[name], name
        for name in ("eval_uneven_logit_sum", "eval_even_logit_sum", "eval_even_loss"):
            assert metrics[name] == pytest.approx(expected[name], abs=1e-5), name


def test_checkpoints_hold_every_partition_without_a_pickle(first_launch: Path) -> None:
    checkpoint = first_launch / "zero2-full" / "checkpoint-3"
    manifest = verify_checkpoint(checkpoint)
    assert manifest["metadata"]["world_size"] == 2
    suffixes = {Path(name).suffix for name in manifest["files"]}
    assert suffixes <= {".json", ".safetensors"}, suffixes  # nothing torch.save wrote
    saved = load_tree(checkpoint, "optimizer")
    assert saved["format"] == FORMAT and saved["zero_stage"] == 2 and saved["world_size"] == 2
    numel = sum(p.numel() for p in load_file(str(checkpoint / "model.safetensors")).values())
    for part in saved["partitions"]:
        # each process's fp32 masters and AdamW moments cover half of the flattened parameters (ZeRO-2)
        masters = [t for group in part["masters"] for t in group]
        assert sum(t.numel() for t in masters) == numel // 2
        moments = part["base_optimizer"]["state"]
        assert [moments[i]["exp_avg"].shape for i in sorted(moments)] == [t.shape for t in masters]
    assert not torch.equal(saved["partitions"][0]["masters"][0][0], saved["partitions"][1]["masters"][0][0])


@pytest.mark.parametrize("run", ["zero2", "zero1-bf16", "zero3"])
def test_resume_mid_epoch_under_deepspeed_is_bit_exact(second_launch: Path, run: str) -> None:
    ranks = deepspeed_results(second_launch / f"{run}-resumed")
    assert all(r["ended"] == "trained" and r["global_step"] == 6 for r in ranks)
    assert ranks[0]["step_ends"] == [4, 5, 6]
    resumed = load_file(str(second_launch / f"{run}-resumed" / "params.safetensors"))
    full = load_file(str(second_launch / f"{run}-full" / "params.safetensors"))
    if run == "zero1-bf16":
        assert next(iter(full.values())).dtype == torch.bfloat16  # the engine really ran in bf16
    for name, tensor in full.items():
        assert torch.equal(resumed[name], tensor), name
    full_log = json.loads((second_launch / f"{run}-full" / "result_0.json").read_text(encoding="utf-8"))
    logged = [e for e in ranks[0]["log_history"] if "loss" in e]
    assert logged == [e for e in full_log["log_history"] if "loss" in e]


def test_a_second_train_on_the_same_trainer_builds_a_new_engine(first_launch: Path) -> None:
    """The first engine's hooks are released and a new optimizer is built (as HF re-initialises
    DeepSpeed); resuming in the same Trainer from its own checkpoint-3 ends where the first run did."""
    deepspeed_results(first_launch / "zero2-full")
    full = load_file(str(first_launch / "zero2-full" / "params.safetensors"))
    again = load_file(str(first_launch / "zero2-full" / "params-again.safetensors"))
    for name, tensor in full.items():
        assert torch.equal(again[name], tensor), name


def test_resumes_that_do_not_fit_the_partitions_are_refused(second_launch: Path) -> None:
    for result in results(second_launch / "other-stage"):
        assert result["ended"] == "error"
        assert "written under ZeRO stage 2 with 2 process(es); this run has stage 1" in result["error"]
    for result in results(second_launch / "no-deepspeed"):
        assert result["ended"] == "error"
        assert "holds DeepSpeed ZeRO partitions, written by a run with deepspeed" in result["error"]


def test_a_process_no_launcher_started_runs_deepspeed_as_one_process(tmp_path: Path) -> None:
    """Without launcher variables DeepSpeed would fall back to MPI discovery; statetrain sets up a
    one-process group, and the run equals the same run without DeepSpeed."""
    scenario = {**ADAM, "zero_stage": 2, "out": str(tmp_path / "alone"), "batch": 8}
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"scenarios": [scenario]}), encoding="utf-8")
    done = run_launched([sys.executable, str(SCRIPT), str(config)])  # no launcher
    assert done.returncode == 0, f"exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    result = json.loads((tmp_path / "alone" / "result_0.json").read_text(encoding="utf-8"))
    assert result["world_size"] == result["torch_world_size"] == 1
    assert result["wrapper"] == "DeepSpeedEngine"
    reference = one_process_reference(tmp_path / "reference", **{**ADAM, "batch": 4})  # 8 rows a step
    worst = max_difference(load_file(str(tmp_path / "alone" / "params.safetensors")), reference)
    assert worst < 1e-6, f"parameters differ from the run without DeepSpeed by {worst}"


def test_sigterm_to_one_process_under_deepspeed_ends_with_one_checkpoint(second_launch: Path) -> None:
    out = second_launch / "signalled"
    for result in deepspeed_results(out):
        assert result["ended"] == "preempted" and result["global_step"] == 2, result
        assert Path(result["checkpoint"]) == out / "checkpoint-2"
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["checkpoint-2"]
    verify_checkpoint(out / "checkpoint-2")
    saved = load_tree(out / "checkpoint-2", "optimizer")
    assert saved["format"] == FORMAT and len(saved["partitions"]) == 2
    assert saved["engine"]["global_steps"] == 2
