"""One rank of a distributed run, for ``test_ddp.py``; started by ``torchrun --nproc_per_node 2``.

Usage::

    torchrun --nproc_per_node 2 tests/distributed/run_ddp.py CONFIG.json

``CONFIG.json`` holds ``{"scenarios": [run, ...]}`` (see :data:`DEFAULTS`), run in turn in the same
processes. Each run writes ``<out>/result_<rank>.json``: the process facts the rank saw (world size
from the arguments, accelerate and torch.distributed), how ``train()`` ended, the evaluation metrics,
and the events this rank received; rank 0 also writes ``<out>/params.safetensors``. A run may ask
one rank to send itself SIGTERM (``sigterm_rank`` at ``on_step_end`` of ``sigterm_step``), which is
a real signal through the installed handler. The process exits 0 when every run ended as expected
(trained, or preempted with a checkpoint), 1 otherwise.

:func:`build_trainer` is imported by the tests, so the one-process reference is built exactly as
each rank builds its run (with the global batch on one process).
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

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from statetrain import Trainer, TrainerCallback, TrainingArguments  # noqa: E402
from statetrain.checkpoint.fsdp import gather_model_state  # noqa: E402
from statetrain.context.preemption import TrainingPreempted  # noqa: E402
from tests.helpers import RowStream, TinyRegressor, regression_rows  # noqa: E402

DEFAULTS: dict[str, Any] = {
    "out": None,
    "rows": 32,
    "eval_rows": 10,
    "batch": 4,
    "eval_batch": 4,
    "max_steps": 6,
    "save_steps": None,
    "seed": 11,
    "learning_rate": 0.1,
    "dropout": 0.0,
    "resume": None,
    "evaluate": False,
    "sigterm_rank": None,
    "sigterm_step": None,
    "diverge_rng": False,
    "use_cpu": False,
    "iterable": False,
    "accumulation": 1,
    "resume_by_rank": None,
    "expect_error": False,
    "optim": "sgd",
    "zero_stage": None,  # a DeepSpeed ZeRO stage: train under DeepSpeed (TrainingArguments.deepspeed)
    "bf16": False,
    "max_grad_norm": 1.0,
    "train_again": False,  # then train() again on the same Trainer from its first checkpoint
    "count_verifications": False,  # record how many checkpoints this rank verified (hashed every file of)
}


def deepspeed_config(config: dict[str, Any]) -> dict[str, Any] | None:
    """The HF-style DeepSpeed config of a run: every value "auto" (filled from the arguments) but the stage."""
    if config["zero_stage"] is None:
        return None
    return {
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "zero_optimization": {"stage": config["zero_stage"]},
    }


def compute_metrics(prediction: Any) -> dict[str, float]:
    """Metrics that change if a sample is counted twice or missed: count, accuracy and a logit sum."""
    logits = np.asarray(prediction.predictions)
    labels = np.asarray(prediction.label_ids)
    return {
        "samples": float(len(labels)),
        "accuracy": float((logits.argmax(-1) == labels).mean()),
        "logit_sum": float(logits.astype(np.float64).sum()),
    }


class Recorder(TrainerCallback):
    """Records the events this rank received; optionally sends this rank SIGTERM once."""

    def __init__(self, sigterm_step: int | None, extra_draws: int) -> None:
        self.sigterm_step = sigterm_step
        self.extra_draws = extra_draws
        self.events: list[str] = []
        self.step_ends: list[int] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.events.append("on_train_begin")

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # ranks that draw differently have different RNG streams: a resume must give each its own back
        if self.extra_draws:
            torch.rand(self.extra_draws)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.step_ends.append(state.global_step)
        if self.sigterm_step is not None and state.global_step == self.sigterm_step:
            self.sigterm_step = None
            os.kill(os.getpid(), signal.SIGTERM)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.events.append(f"on_save:{state.global_step}")

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.events.append("on_evaluate")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.events.append("on_train_end")


def eval_datasets(config: dict[str, Any]) -> dict[str, Any]:
    """``uneven``: the processes' last batches are short and padded; ``even``: every batch is full."""
    return {
        "uneven": regression_rows(config["eval_rows"], seed=2),
        "even": regression_rows(4 * config["eval_batch"], seed=3),
    }


def build_trainer(config: dict[str, Any], batch: int, callbacks: list[Any] | None = None) -> Trainer:
    """The run of ``config`` with ``batch`` samples per process (the global batch on one process)."""
    torch.manual_seed(config["seed"])
    model = TinyRegressor(dropout=config["dropout"])
    save_steps = config["save_steps"]
    rows = regression_rows(config["rows"], seed=1)
    args = TrainingArguments(
        config["out"],
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=config["accumulation"],
        per_device_eval_batch_size=config["eval_batch"],
        max_steps=config["max_steps"],
        learning_rate=config["learning_rate"],
        optim=config["optim"],
        max_grad_norm=config["max_grad_norm"],
        bf16=config["bf16"],
        deepspeed=deepspeed_config(config),
        lr_scheduler_type="constant",
        seed=config["seed"],
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        logging_steps=1,
        disable_tqdm=True,
        report_to="none",
        ddp_timeout=1800,  # a busy machine may stall a rank for minutes; test hangs are caught by progress
        use_cpu=config["use_cpu"],
    )
    return Trainer(
        model=model,
        args=args,
        train_dataset=RowStream(rows) if config["iterable"] else rows,
        eval_dataset=regression_rows(config["eval_rows"], seed=2),
        compute_metrics=compute_metrics,
        callbacks=callbacks,
    )


def save_params(trainer: Trainer, path: Path) -> None:
    """Rank 0 writes the trained parameters (gathered first, by every rank, when DeepSpeed partitions them)."""
    gathered = gather_model_state(trainer.model_wrapped)
    if torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return
    model = trainer.accelerator.unwrap_model(trainer.model)
    names = [name for name, _ in model.named_parameters()]
    state = gathered if gathered is not None else dict(model.named_parameters())
    save_file({name: state[name].detach().cpu().contiguous() for name in names}, str(path))


def run_one(config: dict[str, Any]) -> bool:
    rank = int(os.environ.get("RANK", "0"))
    out = Path(config["out"])
    sigterm = config["sigterm_step"] if config["sigterm_rank"] == rank else None
    recorder = Recorder(sigterm, rank if config["diverge_rng"] else 0)
    result: dict[str, Any] = {"rank": rank, "pid": os.getpid()}
    out.mkdir(parents=True, exist_ok=True)
    ok = True
    verified: list[str] = []
    if config["count_verifications"]:
        from statetrain.checkpoint import store as checkpoint_store
        from statetrain.trainer import checkpoints as checkpointing

        original = checkpoint_store.verify_checkpoint

        def counting(path: Path, **options: Any) -> dict[str, Any]:
            verified.append(Path(path).name)
            return original(path, **options)

        checkpoint_store.verify_checkpoint = counting  # type: ignore[assignment]
        checkpointing.verify_checkpoint = counting  # type: ignore[attr-defined]
    try:
        trainer = build_trainer(config, config["batch"], callbacks=[recorder])
        result["world_size"] = trainer.args.world_size
        result["accelerate_processes"] = trainer.accelerator.num_processes
        result["torch_world_size"] = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        result["is_world_process_zero"] = trainer.is_world_process_zero()
        try:
            resume = config["resume_by_rank"][rank] if config["resume_by_rank"] else config["resume"]
            trainer.train(resume_from_checkpoint=resume)
            result["ended"] = "trained"
        except TrainingPreempted as stop:
            result["ended"] = "preempted"
            result["checkpoint"] = str(stop.checkpoint)
            result["signal"] = stop.signal_name
        result["global_step"] = trainer.state.global_step
        result["wrapper"] = type(trainer.model_wrapped).__name__
        result["is_deepspeed_enabled"] = trainer.is_deepspeed_enabled
        result["log_history"] = trainer.state.log_history
        if config["evaluate"]:
            result["metrics"] = trainer.evaluate(eval_datasets(config))
        save_params(trainer, out / "params.safetensors")
        if config["train_again"]:
            trainer.train(resume_from_checkpoint=str(out / f"checkpoint-{config['save_steps']}"))
            save_params(trainer, out / "params-again.safetensors")
    except Exception as exc:
        ok = bool(config["expect_error"])
        result["ended"] = "error"
        result["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    result["verified"] = verified
    result["events"] = recorder.events
    result["step_ends"] = recorder.step_ends
    (out / f"result_{rank}.json").write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    return ok


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    ok = True
    for scenario in spec["scenarios"]:
        ok = run_one({**DEFAULTS, **scenario}) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
