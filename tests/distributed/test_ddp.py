"""Two CPU processes on gloo, started by torchrun, against one process on the same global batch.

Each launch runs ``run_ddp.py`` in two processes that know only what torchrun put in their
environment (no ``use_cpu``): statetrain must join them over gloo. Every test first asserts that the
world size really was 2 in both processes, as seen by the arguments, accelerate and torch.distributed,
so a launch that silently trained two independent copies cannot pass.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from statetrain.checkpoint.store import verify_checkpoint
from statetrain.trainer.checkpoints import ResumeError
from tests.distributed.launching import TORCHRUN, run_launched
from tests.distributed.run_ddp import DEFAULTS, build_trainer, eval_datasets

SCRIPT = Path(__file__).with_name("run_ddp.py")
PARITY = {"evaluate": True}  # no dropout; 32 rows fill every batch of 4 per process (8 global)
WINDOWS = {"batch": 2, "accumulation": 2}  # 2 processes x 2 micro-batches x 2 rows: the same 8 per step
STREAM = {"iterable": True, "max_steps": 4}  # one pass over the 32 rows, 8 per step
RESUMABLE = {"save_steps": 3, "dropout": 0.2, "diverge_rng": True}  # checkpoint-3 is mid-epoch (4 steps each)


def launch(tmp: Path, scenarios: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    """Run the scenarios in two processes started by torchrun; CPU only, whatever the machine has."""
    config = tmp / f"config-{len(list(tmp.glob('config-*')))}.json"
    config.write_text(json.dumps({"scenarios": scenarios}), encoding="utf-8")
    return run_launched([*TORCHRUN, str(SCRIPT), str(config)])


def results(out: Path) -> list[dict[str, Any]]:
    found = [json.loads((out / f"result_{rank}.json").read_text(encoding="utf-8")) for rank in (0, 1)]
    for rank, result in enumerate(found):
        assert result["rank"] == rank
        assert result["world_size"] == result["accelerate_processes"] == result["torch_world_size"] == 2, result
    return found


def check_launch(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, f"torchrun exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"


@pytest.fixture(scope="module")
def first_launch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A parity run (trained, then evaluated) and a resumable run with a mid-epoch checkpoint."""
    tmp = tmp_path_factory.mktemp("ddp")
    scenarios = [
        {**PARITY, "out": str(tmp / "parity")},
        {**RESUMABLE, "out": str(tmp / "full")},
        {**STREAM, "out": str(tmp / "stream")},
        {**WINDOWS, "out": str(tmp / "windows")},
    ]
    done = launch(tmp, scenarios)
    (tmp / "first-launch.stdout").write_text(done.stdout, encoding="utf-8")
    check_launch(done)
    return tmp


@pytest.fixture(scope="module")
def second_launch(first_launch: Path) -> Path:
    """New processes: resume the resumable run from checkpoint-3; then a run one rank sends SIGTERM to."""
    tmp = first_launch
    checkpoint = str(tmp / "full" / "checkpoint-3")
    resume = {**RESUMABLE, "out": str(tmp / "resumed"), "resume": checkpoint, "count_verifications": True}
    shutil.copytree(tmp / "full" / "checkpoint-3", tmp / "latest" / "checkpoint-3")
    latest = {**RESUMABLE, "out": str(tmp / "latest"), "resume": True, "count_verifications": True}
    signalled = {"out": str(tmp / "signalled"), "sigterm_rank": 1, "sigterm_step": 2}
    checkpoints = [str(tmp / "full" / "checkpoint-3"), str(tmp / "full" / "checkpoint-6")]
    split = {**RESUMABLE, "out": str(tmp / "split"), "resume_by_rank": checkpoints, "expect_error": True}
    check_launch(launch(tmp, [resume, latest, signalled, split]))
    return tmp


def one_process_reference(out: Path, **changes: Any) -> Any:
    """The same run in this process, with the global batch (2 x 4) on one process."""
    config = {**DEFAULTS, **changes, "out": str(out), "use_cpu": True}
    trainer = build_trainer(config, batch=2 * config["batch"])
    assert trainer.args.world_size == 1
    trainer.train()
    return trainer


def max_difference(params: dict[str, torch.Tensor], trainer: Any) -> float:
    """The largest difference between saved parameters and a trainer's (same names required)."""
    expected = {name: p.detach() for name, p in trainer.model.named_parameters()}
    assert params.keys() == expected.keys()
    return max(float((params[name] - expected[name]).abs().max()) for name in expected)


def assert_trained_like(params_file: Path, reference: Any) -> None:
    """The launched run's parameters equal the one-process reference's within 1e-6, and really moved."""
    worst = max_difference(load_file(str(params_file)), reference)
    assert worst < 1e-6, f"parameters differ from the one-process run by {worst}"
    start = one_process_reference_init()
    moved = max(float((reference.model.get_parameter(n).detach() - p).abs().max()) for n, p in start.items())
    assert moved > 1e-2  # the runs really trained


def test_two_processes_train_like_one_process_on_the_global_batch(first_launch: Path, tmp_path: Path) -> None:
    ranks = results(first_launch / "parity")
    reference = one_process_reference(tmp_path, **PARITY)
    assert_trained_like(first_launch / "parity" / "params.safetensors", reference)
    # the logged training loss is the mean over both processes, as on one process
    losses = [[e["loss"] for e in r["log_history"] if "loss" in e] for r in ranks]
    reference_losses = [e["loss"] for e in reference.state.log_history if "loss" in e]
    assert len(losses[0]) == len(reference_losses) == 6
    assert losses[0] == losses[1]
    assert losses[0] == pytest.approx(reference_losses, abs=1e-6)


def test_an_iterable_dataset_is_sharded_like_the_one_process_global_batch(first_launch: Path, tmp_path: Path) -> None:
    ranks = results(first_launch / "stream")
    assert all(r["ended"] == "trained" and r["global_step"] == 4 for r in ranks)
    reference = one_process_reference(tmp_path, **STREAM)
    params = load_file(str(first_launch / "stream" / "params.safetensors"))
    worst = max(float((params[n] - p.detach()).abs().max()) for n, p in reference.model.named_parameters())
    assert worst < 1e-6, f"parameters differ from the one-process run on the stream by {worst}"
    losses = [e["loss"] for e in ranks[0]["log_history"] if "loss" in e]
    assert losses == pytest.approx([e["loss"] for e in reference.state.log_history if "loss" in e], abs=1e-6)


def test_accumulation_windows_in_two_processes_equal_one_process(first_launch: Path, tmp_path: Path) -> None:
    """Gradients are kept local (no_sync) until a window's last micro-batch, then averaged once."""
    ranks = results(first_launch / "windows")
    assert all(r["ended"] == "trained" and r["global_step"] == 6 for r in ranks)
    reference = one_process_reference(tmp_path, batch=4)  # 8 rows per step, no accumulation
    params = load_file(str(first_launch / "windows" / "params.safetensors"))
    worst = max(float((params[n] - p.detach()).abs().max()) for n, p in reference.model.named_parameters())
    assert worst < 1e-6, f"parameters differ from the one-process run by {worst}"


def test_logs_and_progress_come_from_the_main_process_only(first_launch: Path) -> None:
    printed = (first_launch / "first-launch.stdout").read_text(encoding="utf-8")
    # each of the four trainings prints its summary once (twice if every process printed)
    assert printed.count("'train_runtime'") == 4, printed[-3000:]


def one_process_reference_init() -> dict[str, torch.Tensor]:
    config = {**DEFAULTS, "out": "unused", "use_cpu": True}
    torch.manual_seed(config["seed"])
    from tests.helpers import TinyRegressor

    return {name: p.detach() for name, p in TinyRegressor(dropout=0.0).named_parameters()}


def test_evaluation_metrics_equal_one_process(first_launch: Path, tmp_path: Path) -> None:
    ranks = results(first_launch / "parity")
    config = {**DEFAULTS, **PARITY}
    reference = one_process_reference(tmp_path, **PARITY)
    expected = reference.evaluate(eval_datasets(config))
    assert expected["eval_uneven_samples"] == config["eval_rows"] == 10
    for result in ranks:
        metrics = result["metrics"]
        for name in ("uneven", "even"):
            # no sample counted twice by the padding of the processes' short last batches
            assert metrics[f"eval_{name}_samples"] == expected[f"eval_{name}_samples"]
            assert metrics[f"eval_{name}_accuracy"] == expected[f"eval_{name}_accuracy"]
            assert metrics[f"eval_{name}_logit_sum"] == pytest.approx(expected[f"eval_{name}_logit_sum"], abs=1e-5)
        # eval_loss is a mean of per-batch losses (HF): equal when every batch is full; with a short,
        # padded last batch it is weighted by batch, so it depends on how the batches fall (see docs)
        assert metrics["eval_even_loss"] == pytest.approx(expected["eval_even_loss"], abs=1e-6)


def test_events_fire_on_every_rank(first_launch: Path) -> None:
    ranks = results(first_launch / "full")
    for result in ranks:
        assert result["ended"] == "trained"
        assert result["events"] == ["on_train_begin", "on_save:3", "on_save:6", "on_train_end"]
        assert result["step_ends"] == [1, 2, 3, 4, 5, 6]
    assert [r["is_world_process_zero"] for r in ranks] == [True, False]


def test_checkpoint_written_once_with_every_rank_rng(first_launch: Path) -> None:
    out = first_launch / "full"
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["checkpoint-3", "checkpoint-6"]
    checkpoint = out / "checkpoint-3"
    manifest = verify_checkpoint(checkpoint)
    assert manifest["metadata"]["world_size"] == 2
    names = set(manifest["files"])
    assert {"rng_state_0.safetensors", "rng_state_1.safetensors", "model.safetensors"} <= names
    assert "rng_state.safetensors" not in names
    rng = [load_file(str(checkpoint / f"rng_state_{rank}.safetensors")) for rank in (0, 1)]
    assert rng[0].keys() == rng[1].keys()
    assert any(not torch.equal(rng[0][key], rng[1][key]) for key in rng[0])  # each rank's own stream


def test_resume_mid_epoch_in_two_processes_is_bit_exact(second_launch: Path) -> None:
    ranks = results(second_launch / "resumed")
    assert all(r["ended"] == "trained" and r["global_step"] == 6 for r in ranks)
    assert ranks[0]["step_ends"] == [4, 5, 6]
    resumed = load_file(str(second_launch / "resumed" / "params.safetensors"))
    full = load_file(str(second_launch / "full" / "params.safetensors"))
    for name, tensor in full.items():
        assert torch.equal(resumed[name], tensor), name
    full_log = json.loads((second_launch / "full" / "result_0.json").read_text(encoding="utf-8"))["log_history"]
    # the history of steps 1-3 comes back from the checkpoint; steps 4-6 are logged again, identically
    assert [e for e in ranks[0]["log_history"] if "loss" in e] == [e for e in full_log if "loss" in e]


def test_only_the_main_process_reads_the_checkpoint_to_verify_it(second_launch: Path) -> None:
    """A checkpoint is verified (every file hashed) once per copy, here one shared folder, not once per
    process; the other process takes the verified choice, also when it is "the newest good one"."""
    full = load_file(str(second_launch / "full" / "params.safetensors"))
    for run in ("resumed", "latest"):
        ranks = results(second_launch / run)
        assert [r["verified"] for r in ranks] == [["checkpoint-3"], []], run
        assert all(r["ended"] == "trained" and r["step_ends"] == [4, 5, 6] for r in ranks), run
        resumed = load_file(str(second_launch / run / "params.safetensors"))
        assert all(torch.equal(resumed[name], tensor) for name, tensor in full.items()), run


def test_sigterm_to_one_rank_stops_both_at_one_step_with_one_checkpoint(second_launch: Path) -> None:
    out = second_launch / "signalled"
    ranks = results(out)
    for result in ranks:
        assert result["ended"] == "preempted", result
        assert result["signal"] == "SIGTERM"
        assert result["global_step"] == 2
        assert result["step_ends"] == [1, 2]
        assert Path(result["checkpoint"]) == out / "checkpoint-2"
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["checkpoint-2"]
    names = set(verify_checkpoint(out / "checkpoint-2")["files"])
    assert {"rng_state_0.safetensors", "rng_state_1.safetensors"} <= names


def test_processes_that_would_resume_from_different_checkpoints_all_refuse(second_launch: Path) -> None:
    ranks = results(second_launch / "split")
    for result in ranks:
        assert result["ended"] == "error"
        assert "would resume from different checkpoints" in result["error"]
        assert "process 0: checkpoint-3, process 1: checkpoint-6" in result["error"]
        assert result["step_ends"] == []


def test_resuming_with_another_number_of_processes_is_refused(first_launch: Path, tmp_path: Path) -> None:
    config = {**DEFAULTS, **RESUMABLE, "out": str(tmp_path), "use_cpu": True}
    trainer = build_trainer(config, batch=config["batch"])
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    with pytest.raises(ResumeError, match=r"written by a run of 2 process\(es\) and this run has 1"):
        trainer.train(resume_from_checkpoint=str(first_launch / "full" / "checkpoint-3"))
    assert all(torch.equal(p, before[name]) for name, p in trainer.model.named_parameters())


def test_a_launched_process_that_cannot_join_fails_clearly(tmp_path: Path) -> None:
    code = "from statetrain import TrainingArguments; TrainingArguments('unused').world_size"
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("MASTER_ADDR", None)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "started by a launcher as rank 0 of 2" in done.stderr
    assert "MASTER_ADDR" in done.stderr
