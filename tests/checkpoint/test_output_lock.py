"""One run per output_dir: a second train() on a held folder fails at once, naming folder, pid and host;
a SIGKILLed holder leaves no stale lock; an output_dir that cannot hold checkpoints is refused before step 1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from statetrain import Trainer, TrainerCallback, TrainingArguments
from statetrain.checkpoint.output_lock import LOCK_NAME, OutputDirError, OutputDirInUseError
from tests.helpers import TinyRegressor, regression_rows

REPO_ROOT = Path(__file__).resolve().parents[2]
HOLD = (
    "import sys, time; from pathlib import Path; "
    "from statetrain.checkpoint.output_lock import OutputDirLock; "
    "lock = OutputDirLock(Path(sys.argv[1]), 'other-run'); lock.acquire(); print('held', flush=True); time.sleep(120)"
)


class Steps(TrainerCallback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.steps.append(state.global_step)


def build(out: Path, callbacks: list[Any] | None = None, **extra: Any) -> Trainer:
    args = TrainingArguments(
        str(out),
        per_device_train_batch_size=4,
        max_steps=2,
        save_steps=1,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        **extra,
    )
    return Trainer(model=TinyRegressor(), args=args, train_dataset=regression_rows(8), callbacks=callbacks)


def holder(out: Path) -> subprocess.Popen[str]:
    """Another process holding the lock on ``out``, as a second training job would."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(out)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


def test_a_second_run_on_a_held_output_dir_fails_at_once_naming_folder_pid_and_host(tmp_path: Path) -> None:
    out = tmp_path / "out"
    other = holder(out)
    try:
        steps = Steps()
        with pytest.raises(OutputDirInUseError) as info:
            build(out, [steps]).train()
        message = str(info.value)
        assert str(out) in message and f"pid {other.pid}" in message and socket.gethostname() in message
        assert steps.steps == [] and not list(out.glob("checkpoint-*"))  # before any work
    finally:
        other.kill()
        other.wait()


def test_a_sigkilled_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    out = tmp_path / "out"
    other = holder(out)
    other.send_signal(signal.SIGKILL)
    other.wait()
    assert (out / LOCK_NAME).exists()  # the file stays; the kernel dropped the lock with its process
    trainer = build(out)
    trainer.train()
    assert trainer.state.global_step == 2
    assert not (out / LOCK_NAME).exists()  # the next run took it over and removed it when done


def test_two_trainers_in_one_process_cannot_share_an_output_dir(tmp_path: Path) -> None:
    out = tmp_path / "out"
    errors: list[BaseException] = []

    class StartAnother(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 1:
                with pytest.raises(OutputDirInUseError) as info:
                    build(out).train()
                errors.append(info.value)

    build(out, [StartAnother()]).train()
    assert len(errors) == 1 and f"pid {os.getpid()}" in str(errors[0])
    build(out).train()  # released when train() returned


def test_an_output_dir_that_is_a_file_is_refused_before_the_first_step(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_text("not a folder", encoding="utf-8")
    steps = Steps()
    with pytest.raises(OutputDirError, match=r"is a file, not a folder") as info:
        build(out, [steps]).train()
    assert str(out) in str(info.value) and steps.steps == []


UNWRITABLE = """
import os, sys
from pathlib import Path
from statetrain.checkpoint.output_lock import OutputDirError, OutputDirLock
if os.geteuid() == 0:
    os.setgid(65534); os.setuid(65534)  # root writes anywhere: check as nobody (imports done above)
try:
    OutputDirLock(Path(sys.argv[1]), "run").acquire()
except OutputDirError as exc:
    print(exc)
"""


def test_an_unwritable_output_dir_is_refused_when_training_starts() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as parent:  # reachable by nobody (pytest's tmp is 0700)
        os.chmod(parent, 0o755)
        out = Path(parent) / "readonly"
        out.mkdir(mode=0o555)
        out.chmod(0o555)
        check_unwritable(out)


def check_unwritable(out: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", UNWRITABLE, str(out)],
        cwd="/",
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "HOME": "/tmp"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "is not writable by this process" in done.stdout and str(out) in done.stdout
    assert not (out / LOCK_NAME).exists()
