"""Two CPU processes started by ``accelerate launch``, against one process on the same global batch.

``test_ddp.py`` starts ``run_ddp.py`` with torchrun; this starts the same script with ``accelerate
launch``. On a machine without GPUs, ``accelerate launch --cpu`` (and a config file with
``distributed_type: MULTI_CPU`` but no ``--mpirun_hostfile``) goes to its ``simple_launcher``, which
starts ONE process. ``--multi_gpu`` goes to its ``multi_gpu_launcher``, which hands
``--nproc_per_node`` to ``torch.distributed.run``: two real processes, with nothing in their
environment that names a device, so statetrain must join them over gloo on the CPU as under torchrun.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from tests.distributed.launching import launch_env, run_launched
from tests.distributed.test_ddp import (
    PARITY,
    SCRIPT,
    assert_trained_like,
    one_process_reference,
    results,
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def accelerate_launch(tmp: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """``accelerate launch --multi_gpu --num_processes 2`` of one parity run; CPU only, whatever the machine has."""
    config = tmp / "config.json"
    config.write_text(json.dumps({"scenarios": [{**PARITY, "out": str(out)}]}), encoding="utf-8")
    # HF_HOME: no accelerate config file of this machine's user (default_config_file) is read
    env = launch_env(HF_HOME=str(tmp / "hf_home"))
    command = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch"]  # the `accelerate` CLI
    command += ["--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    command += ["--main_process_port", str(free_port()), "--mixed_precision", "no", "--dynamo_backend", "no"]
    return run_launched([*command, str(SCRIPT), str(config)], env)


def test_accelerate_launch_trains_two_processes_like_one_process_on_the_global_batch(tmp_path: Path) -> None:
    out = tmp_path / "parity"
    done = accelerate_launch(tmp_path, out)
    log = f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    assert done.returncode == 0, f"accelerate launch exited {done.returncode}\n{log}"
    # two processes, each seeing a world of 2 (arguments, accelerate, torch.distributed): not two copies
    assert sorted(p.name for p in out.glob("result_*.json")) == ["result_0.json", "result_1.json"], log
    ranks = results(out)
    assert ranks[0]["pid"] != ranks[1]["pid"]
    assert all(r["ended"] == "trained" and r["global_step"] == 6 for r in ranks)

    reference = one_process_reference(tmp_path / "reference", **PARITY)
    assert_trained_like(out / "params.safetensors", reference)
