"""Starting ``run_ddp.py`` (and friends) in fresh processes, as a user's launcher would, on CPU only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LAUNCH_TIMEOUT = 240  # a deadlock fails the test instead of hanging it
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
_LAUNCHER_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_CPU")


def launch_env(**extra: str) -> dict[str, str]:
    """This environment without any launcher's variables and without GPUs, plus ``extra``."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT), **extra}
    for name in _LAUNCHER_VARIABLES:
        env.pop(name, None)
    return env


def run_launched(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``command`` from the repository root, capturing its output, within the launch timeout."""
    return subprocess.run(
        command,
        env=launch_env() if env is None else env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=LAUNCH_TIMEOUT,
    )
