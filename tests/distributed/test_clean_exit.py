"""A finished two-process run ends cleanly, every time: no process aborts after training.

Rank processes used to end now and then with ``terminate called without an active exception``
(SIGABRT, torchrun exit 1) after a successful run: a gloo worker thread that finished the last
``all_gather`` of evaluation asked for the GIL only after interpreter shutdown had begun, and Python
ended the thread inside C++ code that may not throw (see :mod:`statetrain.distributed.teardown`).
Without the exit hook, about one launch in six aborted this way on a quiet 2-core machine. Launched
as a user would, with stdout and stderr piped and Python's output buffered as by default, every
launch must exit 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.distributed.launching import TORCHRUN, launch_env, run_launched

SCRIPT = Path(__file__).with_name("run_ddp.py")
LAUNCHES = 10


@pytest.mark.slow
def test_repeated_two_process_launches_all_exit_zero(tmp_path: Path) -> None:
    env = launch_env()
    env.pop("PYTHONUNBUFFERED", None)  # buffered output, as in a fresh shell
    env["HOME"] = str(tmp_path / "home")
    failures = []
    for launch in range(LAUNCHES):
        out = tmp_path / f"run-{launch}"
        config = tmp_path / f"config-{launch}.json"
        scenario = {"out": str(out), "rows": 16, "max_steps": 2, "save_steps": 1, "evaluate": True}
        config.write_text(json.dumps({"scenarios": [scenario]}), encoding="utf-8")
        done = run_launched([*TORCHRUN, str(SCRIPT), str(config)], env=env)
        results = [json.loads((out / f"result_{rank}.json").read_text(encoding="utf-8")) for rank in (0, 1)]
        assert [r["ended"] for r in results] == ["trained", "trained"], results
        if done.returncode != 0:
            failures.append(f"launch {launch}: exit {done.returncode}\n{done.stderr[-2000:]}")
    assert not failures, "\n".join(failures)
