"""Checkpoint cost: saving through statetrain against bare safetensors, and resume position cost.

**Save.** A 3-layer MLP of 2896x2896 linears (25.2M float32 parameters, 100.7 MB) is trained one
step with AdamW, so a checkpoint holds about 302 MB of tensors (weights, ``exp_avg``,
``exp_avg_sq``). Two candidates write those tensors, interleaved within each repetition (the order
alternates) into fresh folders on the same filesystem:

* ``statetrain``: ``Trainer._save_checkpoint(run)``, the exact call the ``save`` state makes: the
  temporary folder, ``model.safetensors``, the optimizer/scheduler/RNG tensor trees, the JSON
  files, sha256 + fsync of every file and folder, the manifest, the rename, the fsync of the parent.
* ``safetensors``: ``safetensors.torch.save_file`` of the model's state dict and of the optimizer's
  tensors (two files), each file fsynced, then the folder fsynced. This is the floor: no hashing,
  no atomic rename, no RNG or scheduler state.

The folder written in a repetition is deleted outside the clock. The ratio is statetrain's median
over the direct median (target: at most 1.3). ``verify`` (re-reading and hashing the checkpoint,
what every resume does before it loads anything) is reported alongside, not counted in the ratio.

**Resume position.** A map-style dataset of 20,000 rows with batch size 1 (20,000 batches an
epoch). Two measurements, each for a position of 10 and of 10,000 consumed batches:

* ``skip``: ``accelerate.skip_first_batches`` on the Trainer's prepared dataloader (what the
  ``epoch`` state does on resume), up to the first batch out of it; ``load all`` iterates the
  skipped batches instead (what a loader-level skip costs), for contrast;
* ``resume``: ``Trainer.train(resume_from_checkpoint=...)`` from the call to the end of the first
  optimizer step, from real checkpoints written at step 10 and step 10,000 of one run.

Usage::

    python benchmarks/checkpoint.py                    # 5 repetitions, about 1-2 minutes
    python benchmarks/checkpoint.py --reps 3 --dir /mnt/fast --json out.json
    python benchmarks/checkpoint.py --save-only --reps 7   # the save comparison alone

The folder (``--dir``, default: a temporary folder under the system temp dir) decides what is
measured: a tmpfs makes fsync free. The filesystem type is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402

from statetrain import PrinterCallback, Trainer, TrainerCallback, TrainingArguments  # noqa: E402
from statetrain.checkpoint.store import verify_checkpoint  # noqa: E402

WIDTH = 2896
LAYERS = 3
SKIP_ROWS = 20_000
POSITIONS = (10, 10_000)


class MLP(nn.Module):
    """HF-style forward over ``LAYERS`` square linears: ``{"loss", "logits"}``."""

    def __init__(self, width: int = WIDTH, layers: int = LAYERS) -> None:
        super().__init__()
        self.net = nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        logits = self.net(x)
        out: dict[str, Any] = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
        logits = self.net(x)
        return {"logits": logits, "loss": nn.functional.cross_entropy(logits, labels)}


def quiet(trainer: Trainer) -> Trainer:
    """No log lines in the middle of the report."""
    trainer.remove_callback(PrinterCallback)
    return trainer


def rows(n: int, width: int, classes: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, width, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return [{"x": x[i], "labels": y[i]} for i in range(n)]


def args_for(out: Path, **extra: Any) -> TrainingArguments:
    return TrainingArguments(str(out), use_cpu=True, disable_tqdm=True, report_to="none", optim="adamw_torch", **extra)


def fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def filesystem_of(path: Path) -> str:
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                _, mount_point, fs_type = line.split()[:3]
                if str(path.resolve()).startswith(mount_point) and len(mount_point) > len(best):
                    best, kind = mount_point, fs_type
    except OSError:
        pass
    return kind


# --------------------------------------------------------------------------- save


def bench_save(root: Path, reps: int) -> dict[str, Any]:
    torch.manual_seed(0)
    out = root / "save"
    trainer = quiet(
        Trainer(
            model=MLP(),
            args=args_for(out, max_steps=1, per_device_train_batch_size=2, save_strategy="no", logging_steps=1),
            train_dataset=rows(4, WIDTH, WIDTH),
        )
    )
    trainer.train()
    run = trainer._run
    model_tensors = {k: v.contiguous() for k, v in trainer.model.state_dict().items()}
    raw = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    optimizer_tensors = {
        f"state.{index}.{key}": value
        for index, entry in raw.state_dict()["state"].items()
        for key, value in entry.items()
        if isinstance(value, torch.Tensor)
    }
    total_bytes = sum(t.numel() * t.element_size() for t in [*model_tensors.values(), *optimizer_tensors.values()])
    params = sum(p.numel() for p in trainer.model.parameters())

    def statetrain_save() -> Path:
        return trainer._save_checkpoint(run)

    def direct_save() -> Path:
        folder = out / "direct"
        folder.mkdir(parents=True)
        for name, tensors in (("model.safetensors", model_tensors), ("optimizer.safetensors", optimizer_tensors)):
            save_file(tensors, str(folder / name), metadata={"format": "pt"})
            fsync_path(folder / name)
        fsync_path(folder, directory=True)
        fsync_path(out, directory=True)
        return folder

    times: dict[str, list[float]] = {"statetrain": [], "safetensors": [], "verify": []}
    candidates = [("statetrain", statetrain_save), ("safetensors", direct_save)]
    written = 0
    for rep in range(reps + 1):  # the first repetition warms up (page cache, allocator) and is dropped
        order = candidates if rep % 2 == 0 else candidates[::-1]
        for name, save in order:
            start = time.perf_counter()
            folder = save()
            elapsed = time.perf_counter() - start
            if name == "statetrain":
                written = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
                start = time.perf_counter()
                verify_checkpoint(folder)
                verify = time.perf_counter() - start
                if rep:
                    times["verify"].append(verify)
            if rep:
                times[name].append(elapsed)
            shutil.rmtree(folder)
    ratios = [s / d for s, d in zip(times["statetrain"], times["safetensors"], strict=True)]
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {
        "parameters": params,
        "tensor_bytes": total_bytes,
        "checkpoint_bytes": written,
        "times": times,
        "median": medians,
        "ratio_of_medians": medians["statetrain"] / medians["safetensors"],
        "median_ratio": statistics.median(ratios),
    }


# --------------------------------------------------------------------------- resume position


class SaveAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            control.should_save = True


class FirstStep(TrainerCallback):
    """Clocks the end of the first optimizer step after (re)starting, then stops the run."""

    def __init__(self) -> None:
        self.at: float | None = None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.at is None:
            self.at = time.perf_counter()
        control.should_training_stop = True


def bench_resume(root: Path, reps: int) -> dict[str, Any]:
    data = rows(SKIP_ROWS, 8, 4)
    out = root / "resume"

    def trainer(max_steps: int, callbacks: list[Any]) -> Trainer:
        torch.manual_seed(0)
        args = args_for(
            out,
            max_steps=max_steps,
            per_device_train_batch_size=1,
            save_strategy="steps",
            save_steps=POSITIONS[-1],
            logging_steps=100_000,
            max_grad_norm=0.0,  # no clipping: the 10,000 steps that write the checkpoints go faster
        )
        return quiet(Trainer(model=Small(), args=args, train_dataset=data, callbacks=callbacks))

    from accelerate import skip_first_batches

    loader = trainer(POSITIONS[-1], []).get_train_dataloader()
    skip: dict[int, list[float]] = {n: [] for n in POSITIONS}
    load_all: dict[int, list[float]] = {n: [] for n in POSITIONS}
    for _ in range(reps):
        for n in POSITIONS:
            start = time.perf_counter()
            next(iter(skip_first_batches(loader, n)))
            skip[n].append(time.perf_counter() - start)
            start = time.perf_counter()
            iterator = iter(loader)
            for _ in range(n + 1):
                next(iterator)
            load_all[n].append(time.perf_counter() - start)

    start = time.perf_counter()
    trainer(POSITIONS[-1], [SaveAt(POSITIONS[0])]).train()
    training = time.perf_counter() - start
    resume: dict[int, list[float]] = {n: [] for n in POSITIONS}
    for _ in range(reps):
        for n in POSITIONS:
            first = FirstStep()
            resumed = trainer(POSITIONS[-1] + 1, [first])
            start = time.perf_counter()
            resumed.train(resume_from_checkpoint=str(out / f"checkpoint-{n}"))
            assert first.at is not None and resumed.state.global_step == n + 1
            resume[n].append(first.at - start)
            for extra in out.glob("checkpoint-*"):
                if extra.name not in {f"checkpoint-{p}" for p in POSITIONS}:
                    shutil.rmtree(extra)
    return {
        "rows": SKIP_ROWS,
        "training_seconds_to_10000": training,
        "skip": {n: statistics.median(v) for n, v in skip.items()},
        "load_all": {n: statistics.median(v) for n, v in load_all.items()},
        "resume": {n: statistics.median(v) for n, v in resume.items()},
    }


# --------------------------------------------------------------------------- report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions (after one warm-up)")
    parser.add_argument("--dir", default=None, help="folder to write checkpoints in (default: system temp)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--save-only", action="store_true", help="measure only the save (about 20 seconds)")
    options = parser.parse_args(argv)
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="statetrain-bench-", dir=options.dir))
    try:
        begin = time.perf_counter()
        save = bench_save(root, options.reps)
        resume = None if options.save_only else bench_resume(root, options.reps)
        wall = time.perf_counter() - begin
    finally:
        shutil.rmtree(root, ignore_errors=True)

    mb = 1e6
    print(
        f"# statetrain checkpoint benchmark ({platform.platform()}, python {platform.python_version()}, "
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, {filesystem_of(root.parent)} at {root.parent})"
    )
    print()
    print(
        f"Save: {save['parameters'] / 1e6:.1f}M float32 parameters + AdamW state = "
        f"{save['tensor_bytes'] / mb:.0f} MB of tensors ({save['checkpoint_bytes'] / mb:.0f} MB on disk), "
        f"median of {options.reps}"
    )
    print()
    print("| candidate | median s | MB/s |")
    print("|---|---:|---:|")
    for name in ("safetensors", "statetrain"):
        seconds = save["median"][name]
        print(f"| {name} | {seconds:.3f} | {save['tensor_bytes'] / mb / seconds:.0f} |")
    print(
        f"| verify (resume's read-back + sha256) | {save['median']['verify']:.3f} | "
        f"{save['checkpoint_bytes'] / mb / save['median']['verify']:.0f} |"
    )
    print()
    print(
        f"ratio statetrain / safetensors: {save['ratio_of_medians']:.2f}x (median of per-repetition ratios "
        f"{save['median_ratio']:.2f}x; target <= 1.3x: {'met' if save['ratio_of_medians'] <= 1.3 else 'NOT met'})"
    )
    print()
    if resume is None:
        print(f"(resume not measured: --save-only; whole benchmark {wall:.0f} s)")
        if options.json:
            Path(options.json).write_text(json.dumps({"save": save}, indent=2, default=str))
        return 0
    print(f"Resume position: map-style dataset of {resume['rows']} rows, batch 1; median of {options.reps}")
    print()
    print(
        "| consumed batches | skip_first_batches to first batch | load every skipped batch | "
        "train(resume_from_checkpoint) to end of first step |"
    )
    print("|---:|---:|---:|---:|")
    for n in POSITIONS:
        print(
            f"| {n:,} | {resume['skip'][n] * 1e3:.2f} ms | {resume['load_all'][n] * 1e3:.1f} ms | "
            f"{resume['resume'][n] * 1e3:.1f} ms |"
        )
    print()
    print(
        f"(training the 10,000-step run that wrote the checkpoints: {resume['training_seconds_to_10000']:.1f} s; "
        f"whole benchmark {wall:.0f} s)"
    )
    if options.json:
        Path(options.json).write_text(json.dumps({"save": save, "resume": resume}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
