"""Train in a child process, for the crash, fault and signal tests of ``test_checkpoints_trainer.py``.

Usage::

    python tests/resume/run_training.py CONFIG.json

``CONFIG.json`` holds the run (see :data:`DEFAULTS`), or ``{"scenarios": [run, ...]}`` to run several
in turn in one process (torch is imported once; a scenario that kills the process goes last). A
run may say what to do to it:

* ``fsize_limit``: set ``RLIMIT_FSIZE`` to this many bytes (``SIGXFSZ`` ignored, so a write past it
  fails with ``EFBIG``): right before ``train()``, or, with ``fsize_after_save: n``, from the
  ``on_save`` of ``checkpoint-<n>`` on (the disk fills up between two checkpoints);
* ``kill_during_save``: SIGKILL this process in the middle of writing ``checkpoint-<n>``, after its
  model and optimizer files are written and before its manifest (a crash during a save);
* ``sigterm_at_substep``: from ``on_substep_end`` while ``global_step == n``, send this process
  SIGTERM, and again at the next micro-batch of the same window (launchers often send two).

Each run writes ``result`` (JSON: how ``train()`` ended) and, when it returns or is preempted,
``params`` (the final parameters, safetensors). The process exits with the last run's status: 0
when training finished, 75 (the CLI's documented preemption status) on ``TrainingPreempted``, 1 on
any other error.

:func:`build_trainer` is imported by the tests too, so the uninterrupted reference run is built
exactly as the child builds its run.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from statetrain import Trainer, TrainerCallback, TrainingArguments  # noqa: E402
from tests.helpers import TinyRegressor, regression_rows  # noqa: E402

DEFAULTS: dict[str, Any] = {
    "out": None,
    "rows": 24,
    "batch": 4,
    "accumulation": 1,
    "max_steps": 6,
    "save_steps": 2,
    "logging_steps": 1,
    "seed": 7,
    "learning_rate": 0.05,
    "dropout": 0.2,
    "resume": None,
    "params": None,
    "result": None,
    "fsize_limit": None,
    "fsize_after_save": None,
    "kill_during_save": None,
    "sigterm_at_substep": None,
}


class RecordStart(TrainerCallback):
    """Records the step training (re)starts from and whether ``on_train_end`` fired."""

    def __init__(self) -> None:
        self.start_step: int | None = None
        self.train_end = False

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.start_step = state.global_step

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.train_end = True


class TermMidWindow(TrainerCallback):
    """Sends SIGTERM to this process from inside an accumulation window, twice."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.sent = 0
        self.substeps_after_signal = 0

    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step and self.sent < 2:
            os.kill(os.getpid(), signal.SIGTERM)
            self.sent += 1
        elif self.sent:
            self.substeps_after_signal += 1


class FileSizeLimit(TrainerCallback):
    """Sets ``RLIMIT_FSIZE`` (with ``SIGXFSZ`` ignored) now, or once ``checkpoint-<after>`` is saved."""

    def __init__(self, limit: int, after: int | None) -> None:
        self.limit = limit
        self.after = after
        if after is None:
            self.apply()

    def apply(self) -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, hard))

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.after:
            self.apply()

    @staticmethod
    def lift() -> None:
        import resource

        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))


def settings(config: dict[str, Any]) -> dict[str, Any]:
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}")
    return {**DEFAULTS, **config}


def build_trainer(config: dict[str, Any], callbacks: list[Any] | None = None) -> Trainer:
    """The run every child and reference uses: TinyRegressor with dropout, AdamW, linear schedule."""
    c = settings(config)
    torch.manual_seed(1234)
    args = TrainingArguments(
        str(c["out"]),
        per_device_train_batch_size=c["batch"],
        gradient_accumulation_steps=c["accumulation"],
        max_steps=c["max_steps"],
        save_strategy="steps",
        save_steps=c["save_steps"],
        logging_steps=c["logging_steps"],
        learning_rate=c["learning_rate"],
        seed=c["seed"],
        use_cpu=True,
        disable_tqdm=True,
        report_to="none",
    )
    return Trainer(
        model=TinyRegressor(dropout=c["dropout"]),
        args=args,
        train_dataset=regression_rows(c["rows"], seed=3),
        callbacks=callbacks,
    )


def parameters(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone().contiguous() for name, p in trainer.model.named_parameters()}


def kill_inside_checkpoint(step: int) -> None:
    """SIGKILL once ``checkpoint-<step>``'s optimizer files are in its temporary folder."""
    from statetrain.trainer import checkpoints as checkpointing

    original = checkpointing.save_tree

    def save_tree(obj: Any, directory: Any, name: str) -> Any:
        written = original(obj, directory, name)
        if name == "optimizer" and Path(directory).name.startswith(f".tmp-checkpoint-{step}-"):
            os.kill(os.getpid(), signal.SIGKILL)
        return written

    checkpointing.save_tree = save_tree  # type: ignore[assignment]


def sentinel_handler(signum: int, frame: Any) -> None:  # installed before train() to check it comes back
    raise AssertionError("the sentinel SIGTERM handler must not be called while train() runs")


def run_scenario(c: dict[str, Any]) -> int:
    """Run one configured training in this process; write its result (and parameters); the exit status."""
    from statetrain.context.preemption import PREEMPTION_EXIT_CODE, TrainingPreempted

    record = RecordStart()
    callbacks: list[Any] = [record]
    term = None
    if c["sigterm_at_substep"] is not None:
        term = TermMidWindow(c["sigterm_at_substep"])
        callbacks.append(term)
    if c["fsize_limit"] is not None:
        callbacks.append(FileSizeLimit(int(c["fsize_limit"]), c["fsize_after_save"]))
    if c["kill_during_save"] is not None:
        kill_inside_checkpoint(c["kill_during_save"])
    trainer = build_trainer(c, callbacks)
    previous = signal.signal(signal.SIGTERM, sentinel_handler)
    result: dict[str, Any] = {"status": "ok"}
    code = 0
    try:
        trainer.train(resume_from_checkpoint=c["resume"])
    except TrainingPreempted as stop:
        result.update(
            status="preempted",
            checkpoint=str(stop.checkpoint),
            signal_name=stop.signal_name,
            preempted_step=stop.global_step,
            message=str(stop),
        )
        code = PREEMPTION_EXIT_CODE
    except Exception as error:
        result.update(
            status="error",
            error_type=type(error).__name__,
            error_module=type(error).__module__,
            message=str(error),
            errno=getattr(error, "errno", None),
            traceback=traceback.format_exc(),
        )
        code = 1
    finally:
        if c["fsize_limit"] is not None:
            FileSizeLimit.lift()
    handler_restored = signal.getsignal(signal.SIGTERM) is sentinel_handler
    signal.signal(signal.SIGTERM, previous)
    result.update(
        exit_status=code,
        global_step=trainer.state.global_step,
        start_step=record.start_step,
        train_end_fired=record.train_end,
        sigterm_handler_restored=handler_restored,
        sigterms_sent=term.sent if term else 0,
        substeps_after_signal=term.substeps_after_signal if term else 0,
    )
    if c["params"] and result["status"] != "error":
        save_file(parameters(trainer), str(c["params"]))
    if c["result"]:
        Path(c["result"]).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return code


def main(config_path: str) -> int:
    """Run the config, or each of its ``scenarios`` in order (one import of torch for all of them)."""
    torch.set_num_threads(1)  # as the tests' own process: tiny tensors, and a busy machine
    config = json.loads(Path(config_path).read_text(encoding="utf-8"))
    scenarios = config.get("scenarios", [config])
    code = 0
    for scenario in scenarios:
        code = run_scenario(settings(scenario))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
