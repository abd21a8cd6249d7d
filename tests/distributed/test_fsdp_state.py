"""The full-state gathering checkpoints use under FSDP, run with torch's FSDP2 on two CPU processes (gloo).

accelerate turns FSDP on only with GPUs, so the Trainer's FSDP path itself runs on GPU machines only;
this checks the part that decides its correctness: a sharded model and optimizer written as one full
copy and loaded back into fresh shards continue exactly as the original.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.distributed.launching import TORCHRUN, run_launched

SCRIPT = Path(__file__).with_name("run_fsdp_state.py")
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_full_state_round_trip_through_files_continues_exactly(tmp_path: Path) -> None:
    out = tmp_path / "checkpoint"
    done = run_launched([*TORCHRUN, str(SCRIPT), str(out)])  # a hang is judged by progress, not a wall clock
    assert done.returncode == 0, done.stderr[-6000:]
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
    other = json.loads((tmp_path / "checkpoint-rank1.json").read_text(encoding="utf-8"))
    assert result["world_size"] == 2
    assert result["is_fsdp"] and not result["plain_is_fsdp"] and result["plain_state_is_none"]
    assert result["local_shape_0"] == [8, 8]  # each process held half of the 16x8 weight
    assert result["model_keys"] == ["0.bias", "0.weight", "2.bias", "2.weight"]  # the unwrapped names
    assert other["empty_off_main"]  # the full copy is gathered to the main process only
    assert result["moved"] > 1e-3
    assert result["params_equal"] and result["optimizer_equal"]
