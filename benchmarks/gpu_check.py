"""Checks that need a CUDA device: bf16 and fp16 training, CUDA RNG resume, throughput against a hand-written loop.

The test suite runs on CPU only; this script covers what it cannot, in under five minutes on one
GPU. Each check runs in a fresh subprocess (clean CUDA and accelerate state) and prints one line:

* ``bf16`` / ``fp16``: 120 optimizer steps of an MLP with dropout under ``bf16=True`` / ``fp16=True``
  (fp16 with accelerate's grad scaler): the loss stays finite and falls, the parameters stay float32
  (mixed precision autocasts; it does not cast the model), and fp16 reports the scaler's skipped steps.
* ``cuda_rng_resume``: a run with dropout on the GPU (its masks draw from the CUDA generator) saved at
  step 30 of 60, resumed from that checkpoint in a new process, must end with parameters and logged
  losses identical to the uninterrupted run (``full_determinism=True``).
* ``deepspeed_resume``: the same resume check under DeepSpeed ZeRO-2 in bf16 (one process, the
  one-process group statetrain sets up), from statetrain's pickle-free DeepSpeed checkpoint.
* ``throughput``: the same workload (MLP 1024 wide, batch 256, AdamW, 300 steps, fp32) as a
  hand-written loop and as ``Trainer.train()``; the ratio of their times is reported against a 1.15
  target. A ratio above it is reported, not failed: a shared GPU is noisy.

Usage::

    python benchmarks/gpu_check.py               # all checks; exit 0 when every correctness check passes
    python benchmarks/gpu_check.py --only bf16 cuda_rng_resume
    python benchmarks/gpu_check.py --smoke-cpu   # the same plumbing on CPU, tiny sizes (fp16 skipped)

On a machine without CUDA it exits with status 2 and says so (unless ``--smoke-cpu``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

CHECKS = ("bf16", "fp16", "cuda_rng_resume", "deepspeed_resume", "throughput")
DEEPSPEED_ZERO2 = {
    "train_micro_batch_size_per_gpu": "auto",
    "train_batch_size": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "bf16": {"enabled": "auto"},
    "zero_optimization": {"stage": 2},
}
RESULT_MARK = "@@gpu-check "
NO_CUDA_EXIT = 2
THROUGHPUT_TARGET = 1.15
CHECK_TIMEOUT_S = 150


# --- workloads (run inside the worker subprocess) --------------------------------------------------


def _model(width: int, depth: int, dropout: float) -> Any:
    import torch
    from torch import nn

    class MLP(nn.Module):
        """HF-style forward so the Trainer takes it as is."""

        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = [nn.Linear(64, width), nn.GELU(), nn.Dropout(dropout)]
            for _ in range(depth - 1):
                layers += [nn.Linear(width, width), nn.GELU(), nn.Dropout(dropout)]
            layers.append(nn.Linear(width, 10))
            self.net = nn.Sequential(*layers)

        def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
            logits = self.net(x)
            out: dict[str, Any] = {"logits": logits}
            if labels is not None:
                out["loss"] = nn.functional.cross_entropy(logits.float(), labels)
            return out

    torch.manual_seed(0)
    return MLP()


def _rows(count: int) -> list[dict[str, Any]]:
    import torch

    g = torch.Generator().manual_seed(1)
    x = torch.randn(count, 64, generator=g)
    y = (x[:, :10].argmax(-1) + (x[:, 10] > 0).long()) % 10  # learnable labels
    return [{"x": x[i], "labels": y[i]} for i in range(count)]


def _arguments(out: str, cpu: bool, **options: Any) -> Any:
    from statetrain import TrainingArguments

    base: dict[str, Any] = {
        "per_device_train_batch_size": 64,
        "learning_rate": 1e-3,
        "logging_steps": 10,
        "save_strategy": "no",
        "disable_tqdm": True,
        "report_to": "none",
        "seed": 7,
        "use_cpu": cpu,
    }
    base.update(options)
    return TrainingArguments(out, **base)


def _losses(trainer: Any) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def check_precision(kind: str, out: str, cpu: bool, steps: int) -> dict[str, Any]:
    import math

    import torch

    from statetrain import Trainer

    if cpu and kind == "fp16":
        return {"ok": True, "skipped": "fp16 training needs CUDA (accelerate has no CPU fp16 grad scaler)"}
    args = _arguments(out, cpu, max_steps=steps, **{kind: True})
    trainer = Trainer(model=_model(256, 3, 0.1), args=args, train_dataset=_rows(steps * 64))
    trainer.train()
    losses = _losses(trainer)
    dtypes = sorted({str(p.dtype) for p in trainer.model.parameters()})
    scaler = trainer.accelerator.scaler
    result: dict[str, Any] = {
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "param_dtypes": dtypes,
        "device": str(next(trainer.model.parameters()).device),
        "grad_scaler": scaler is not None,
    }
    if scaler is not None:
        result["scale"] = float(scaler.get_scale())
    problems = []
    if not all(math.isfinite(v) for v in losses):
        problems.append("a logged loss is not finite")
    if not losses[-1] < losses[0]:
        problems.append("the loss did not fall")
    if dtypes != ["torch.float32"]:
        problems.append(f"parameters are {dtypes}, expected float32 master weights")
    if kind == "fp16" and scaler is None:
        problems.append("fp16 ran without a grad scaler")
    if not cpu and not result["device"].startswith("cuda"):
        problems.append(f"trained on {result['device']}")
    del torch
    result["ok"] = not problems
    result["problems"] = problems
    return result


def rng_run(out: str, cpu: bool, steps: int, resume: str | None, deepspeed: bool = False) -> dict[str, Any]:
    """One leg of the resume check: train with dropout, saving half-way; report params and losses.

    With ``deepspeed``, under ZeRO-2 in bf16 (DeepSpeed refuses ``use_cpu``; on a machine without a
    GPU it runs on the CPU anyway).
    """
    import hashlib

    import torch

    from statetrain import Trainer

    engine: dict[str, Any] = {"deepspeed": DEEPSPEED_ZERO2, "bf16": True} if deepspeed else {}
    args = _arguments(
        out,
        cpu and not deepspeed,
        max_steps=steps,
        save_strategy="steps",
        save_steps=steps // 2,
        full_determinism=True,
        **engine,
    )
    trainer = Trainer(model=_model(256, 3, 0.3), args=args, train_dataset=_rows(steps * 64 // 2))
    trainer.train(resume_from_checkpoint=resume)
    digest = hashlib.sha256()
    for name, param in sorted(trainer.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())  # any dtype
    return {"params_sha256": digest.hexdigest(), "losses": _losses(trainer)}


def throughput(cpu: bool, steps: int) -> dict[str, Any]:
    """Seconds for the same training as a hand-written loop and as ``Trainer.train()``."""
    import torch
    from torch.utils.data import DataLoader

    from statetrain import Trainer

    device = torch.device("cpu" if cpu else "cuda")
    batch, width = 256, (128 if cpu else 1024)
    rows = _rows(steps * batch)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def hand() -> float:
        model = _model(width, 4, 0.0).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / steps)
        loader = DataLoader(rows, batch_size=batch, shuffle=True, pin_memory=device.type == "cuda")
        sync()
        start = time.perf_counter()
        for inputs in loader:
            inputs = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
            loss = model(**inputs)["loss"]
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        sync()
        return time.perf_counter() - start

    def trainer() -> float:
        with tempfile.TemporaryDirectory() as out:
            args = _arguments(out, cpu, per_device_train_batch_size=batch, max_steps=steps, logging_steps=100)
            run = Trainer(model=_model(width, 4, 0.0), args=args, train_dataset=rows)
            sync()
            start = time.perf_counter()
            run.train()
            sync()
            return time.perf_counter() - start

    hand()  # warm-up: CUDA context, kernels, allocator
    trainer()
    hand_s = min(hand() for _ in range(2))
    trainer_s = min(trainer() for _ in range(2))
    ratio = trainer_s / hand_s
    return {
        "ok": True,  # reported, not failed: a shared device is noisy
        "hand_s": round(hand_s, 3),
        "statetrain_s": round(trainer_s, 3),
        "ratio": round(ratio, 3),
        "target": THROUGHPUT_TARGET,
        "met": ratio <= THROUGHPUT_TARGET,
    }


def worker(name: str, out: str, cpu: bool, extra: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    small = cpu
    if name in ("bf16", "fp16"):
        return check_precision(name, out, cpu, 30 if small else 120)
    if name == "rng_run":
        return rng_run(out, cpu, 20 if small else 60, extra.get("resume"), bool(extra.get("deepspeed")))
    if name == "throughput":
        return throughput(cpu, 40 if small else 300)
    raise SystemExit(f"unknown worker {name!r}")


# --- orchestration (the parent process imports no torch) -----------------------------------------


def run_worker(name: str, out: str, cpu: bool, **extra: Any) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", name, "--out", out, "--extra", json.dumps(extra)]
    if cpu:
        command.append("--smoke-cpu")
    env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8", "PYTHONHASHSEED": "0"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        return {"ok": False, "problems": [f"timed out after {CHECK_TIMEOUT_S} s"]}
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARK) :])
            return result
    return {"ok": False, "problems": [f"worker exited {done.returncode}: {done.stderr[-2000:]}"]}


def check_rng_resume(cpu: bool, **extra: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as full_dir, tempfile.TemporaryDirectory() as resumed_dir:
        full = run_worker("rng_run", full_dir, cpu, **extra)
        if "params_sha256" not in full:
            return full
        checkpoints = sorted(Path(full_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        if not checkpoints:
            return {"ok": False, "problems": ["the uninterrupted run wrote no checkpoint"]}
        resumed = run_worker("rng_run", resumed_dir, cpu, resume=str(checkpoints[0]), **extra)
        if "params_sha256" not in resumed:
            return resumed
    problems = []
    if resumed["params_sha256"] != full["params_sha256"]:
        problems.append("final parameters differ between the uninterrupted and the resumed run")
    if resumed["losses"] != full["losses"]:
        problems.append("logged losses differ between the uninterrupted and the resumed run")
    return {"ok": not problems, "problems": problems, "resumed_from": checkpoints[0].name, "steps": len(full["losses"])}


def cuda_available() -> bool:
    probe = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", nargs="+", choices=CHECKS, default=list(CHECKS))
    parser.add_argument("--smoke-cpu", action="store_true", help="run the plumbing on CPU at tiny sizes")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--extra", default="{}", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.worker:
        result = worker(options.worker, options.out, options.smoke_cpu, json.loads(options.extra))
        print(RESULT_MARK + json.dumps(result), flush=True)
        return 0
    if not options.smoke_cpu and not cuda_available():
        print(
            "gpu_check: no CUDA device on this machine (torch.cuda.is_available() is False), so nothing was "
            "run. These checks need a GPU; the CPU behaviour is covered by the test suite. Use --smoke-cpu "
            "to exercise this script's plumbing on CPU.",
            file=sys.stderr,
        )
        return NO_CUDA_EXIT
    started = time.perf_counter()
    results: dict[str, Any] = {}
    for name in options.only:
        begin = time.perf_counter()
        if name == "cuda_rng_resume":
            result = check_rng_resume(options.smoke_cpu)
        elif name == "deepspeed_resume":
            result = check_rng_resume(options.smoke_cpu, deepspeed=True)
        else:
            with tempfile.TemporaryDirectory() as out:
                result = run_worker(name, out, options.smoke_cpu)
        result["seconds"] = round(time.perf_counter() - begin, 1)
        results[name] = result
        status = "ok" if result.get("ok") else "FAILED"
        details = {k: v for k, v in result.items() if k not in ("ok", "problems")}
        print(f"{name:16s} {status:6s} {json.dumps(details)}")
        for problem in result.get("problems", []):
            print(f"{'':16s} - {problem}")
    total = time.perf_counter() - started
    print(f"total {total:.0f} s{' (CPU smoke run: not a GPU result)' if options.smoke_cpu else ''}")
    if options.json:
        Path(options.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0 if all(r.get("ok") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
