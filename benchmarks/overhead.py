"""Per-step overhead of ``statetrain.Trainer.train()`` against a hand-written PyTorch loop.

Workload (as in the reference, trainer-semantics.md §10): batch 32 through an MLP 32→64→10, 500
optimizer steps (one epoch of 500x32 in-memory samples), AdamW + linear LambdaLR, no clipping, no
AMP, no accumulation, one intra-op and one inter-op thread, CPU.

Every candidate runs in a fresh subprocess; candidates are interleaved within each repetition (the
order rotates between repetitions). In its process a candidate is built and trained once to warm up,
then built again and trained ``--calls`` more times under the clock (default once; with more, the
fastest counts). µs/step is the timed call divided by the steps; ratios are taken against the
hand-written loop of the same repetition, so drift from neighbouring load on a shared machine
cancels out of the ratios better than out of the absolutes. Wall time is the headline; the process's
CPU time is reported beside it (it leaves out time the process spent descheduled, not slowdowns
from a busy sibling core).

All candidates train on the same list of feature dicts ``{"x", "labels"}``. The hand-written loop
runs the plain ``nn.Sequential`` with ``F.cross_entropy`` and torch's default collate; the trainers
run the same ``nn.Sequential`` (same initial weights) behind an HF-style
``forward(x, labels) -> {"loss", "logits"}``, with their own default collator.

What is timed:

* ``hand``: building the DataLoader, AdamW and LambdaLR, then the loop.
* ``statetrain`` / ``transformers``: ``trainer.train()`` (the ``Trainer`` is built outside the clock).

Every candidate also reports a digest of its final parameters; the table says whether each ended
bit-identical to the hand-written loop (same init, same sampler order, same arithmetic).

Usage::

    python benchmarks/overhead.py                      # 5 repetitions, all candidates
    python benchmarks/overhead.py --reps 3 --json out.json
    python benchmarks/overhead.py --candidates hand statetrain
    python benchmarks/overhead.py --calls 3                # steadier on a busy machine
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

# Measure the checkout this file lives in, whatever the working directory or the installed copy.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

CANDIDATES = ("hand", "statetrain", "transformers")
BATCH = 32
D_IN, HIDDEN, D_OUT = 32, 64, 10
LR = 1e-3
SEED = 42  # TrainingArguments.seed default: the seedable sampler of both trainers starts from it
INIT_SEED = 0
RESULT_MARK = "@@overhead-result "
TARGET = 1.6  # statetrain / hand-written, median over repetitions
DESCHEDULED = 1.05  # wall / CPU time above this: the timed call lost the CPU to other work


# --- the workload (imported lazily so the parent process stays light) ----------------------------
def _set_threads() -> None:
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)


def _data(steps: int) -> list[dict[str, Any]]:
    """One epoch of ``steps`` batches, as the list of feature dicts both trainers take."""
    import torch

    g = torch.Generator().manual_seed(1234)
    n = steps * BATCH
    x = torch.randn(n, D_IN, generator=g)
    y = torch.randint(0, D_OUT, (n,), generator=g)
    return [{"x": x[i], "labels": y[i]} for i in range(n)]


def _mlp() -> Any:
    import torch
    from torch import nn

    torch.manual_seed(INIT_SEED)
    return nn.Sequential(nn.Linear(D_IN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, D_OUT))


def _dict_model() -> Any:
    """The same MLP (same initial weights) behind the HF-style ``forward(x, labels) -> dict``."""
    from torch import nn

    class DictMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _mlp()

        def forward(self, x: Any, labels: Any = None) -> dict[str, Any]:
            logits = self.net(x)
            out = {"logits": logits}
            if labels is not None:
                out["loss"] = nn.functional.cross_entropy(logits, labels)
            return out

    return DictMLP()


def _digest(params: Any) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in params:
        h.update(p.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class _Clock:
    """Wall time and this process's CPU time over the timed region."""

    def __enter__(self) -> _Clock:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


def _schedule(steps: int) -> Any:
    def linear(step: int) -> float:  # HF "linear" with no warmup
        return max(0.0, float(steps - step) / float(max(1, steps)))

    return linear


def _hand_once(data: list[dict[str, Any]], steps: int) -> tuple[_Clock, str]:
    import torch
    from torch.nn import functional as F
    from torch.utils.data import DataLoader, RandomSampler

    net = _mlp()
    with _Clock() as clock:
        loader: DataLoader[dict[str, Any]] = DataLoader(
            data,  # type: ignore[arg-type]  # a list is a map-style dataset
            batch_size=BATCH,
            sampler=RandomSampler(data, generator=torch.Generator().manual_seed(SEED)),
        )
        optimizer = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=0.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(steps))
        net.train()
        for batch in loader:
            loss = F.cross_entropy(net(batch["x"]), batch["labels"])
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
    return clock, _digest(net.parameters())


def _statetrain_once(data: list[dict[str, Any]], steps: int, tmp: str) -> tuple[_Clock, str]:
    from statetrain import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=tmp,
        per_device_train_batch_size=BATCH,
        max_steps=steps,
        learning_rate=LR,
        max_grad_norm=0.0,
        logging_nan_inf_filter=False,
        logging_steps=10**6,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        optim="adamw_torch",
        dataloader_pin_memory=False,
    )
    model = _dict_model()
    trainer = Trainer(model=model, args=args, train_dataset=data)
    with _Clock() as clock:
        trainer.train()
    assert trainer.state.global_step == steps
    return clock, _digest(model.net.parameters())


def _transformers_once(data: list[dict[str, Any]], steps: int, tmp: str) -> tuple[_Clock, str]:
    import transformers

    transformers.logging.set_verbosity_error()
    args = transformers.TrainingArguments(
        output_dir=tmp,
        per_device_train_batch_size=BATCH,
        max_steps=steps,
        learning_rate=LR,
        max_grad_norm=0.0,
        logging_nan_inf_filter=False,
        remove_unused_columns=False,
        logging_steps=10**6,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        optim="adamw_torch",
        dataloader_pin_memory=False,
    )
    model = _dict_model()
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data)
    with _Clock() as clock:
        trainer.train()
    assert trainer.state.global_step == steps
    return clock, _digest(model.net.parameters())


def child(name: str, steps: int, calls: int = 1) -> dict[str, Any]:
    """Warm-up call, then ``calls`` timed calls (the fastest counts), in this (fresh) process."""
    _set_threads()
    import torch

    data = _data(steps)
    with tempfile.TemporaryDirectory() as tmp:
        if name == "hand":
            once = lambda: _hand_once(data, steps)  # noqa: E731
        elif name == "statetrain":
            once = lambda: _statetrain_once(data, steps, tmp)  # noqa: E731
        elif name == "transformers":
            once = lambda: _transformers_once(data, steps, tmp)  # noqa: E731
        else:
            raise SystemExit(f"unknown candidate {name!r}; choose from {CANDIDATES}")
        warm, _ = once()
        timed = [once() for _ in range(calls)]
    best = min(timed, key=lambda t: t[0].wall)[0]
    digests = {digest for _, digest in timed}
    return {
        "candidate": name,
        "seconds": best.wall,
        "cpu_seconds": best.cpu,
        "warmup_seconds": warm.wall,
        "all_seconds": [t[0].wall for t in timed],
        "us_per_step": best.wall / steps * 1e6,
        "cpu_us_per_step": best.cpu / steps * 1e6,
        "digest": digests.pop() if len(digests) == 1 else "nondeterministic",
        "torch_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
    }


# --- the parent: interleave fresh processes, aggregate ---------------------------------------------
def _run_child(name: str, steps: int, calls: int) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env.setdefault("PYTHONWARNINGS", "ignore")
    command = [sys.executable, os.path.abspath(__file__), "--child", name, "--steps", str(steps)]
    proc = subprocess.run([*command, "--calls", str(calls)], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"candidate {name!r} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    marked = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if not marked:
        raise RuntimeError(f"candidate {name!r} printed no result:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return dict(json.loads(marked[-1][len(RESULT_MARK) :]))


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            info["cpu"] = names[0]
    except OSError:
        pass
    probe = (
        "import json, torch, accelerate\n"
        "v = {'torch': torch.__version__, 'accelerate': accelerate.__version__}\n"
        "try:\n import transformers; v['transformers'] = transformers.__version__\n"
        "except ImportError: pass\n"
        "print(json.dumps(v))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    if out.returncode == 0:
        info.update(json.loads(out.stdout.strip().splitlines()[-1]))
    return info


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _rows(names: list[str], reps: list[dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    hand_digest = reps[0]["hand"]["digest"]
    rows = []
    for name in names:
        row: dict[str, Any] = {"candidate": name}
        for key in ("us_per_step", "cpu_us_per_step"):
            values = [r[name][key] for r in reps]
            ratios = [r[name][key] / r["hand"][key] for r in reps]
            prefix = "" if key == "us_per_step" else "cpu_"
            row[key] = _summary(values)
            row[f"{prefix}ratio"] = _summary(ratios)
            row[f"{prefix}added_us_per_step"] = _summary([r[name][key] - r["hand"][key] for r in reps])
            row[f"per_rep_{key}"] = values
            row[f"per_rep_{prefix}ratio"] = ratios
        row["bit_identical_to_hand"] = {r[name]["digest"] for r in reps} == {hand_digest}
        rows.append(row)
    return rows


def _print_table(rows: list[dict[str, Any]]) -> None:
    def ratio_text(r: dict[str, float]) -> str:
        return f"{r['median']:.2f}x [{r['min']:.2f}-{r['max']:.2f}]"

    header = (
        f"{'candidate':<14}{'µs/step':>9}{'x hand-written [range]':>26}{'added':>8}"
        f"{'CPU µs/step':>13}{'CPU x hand [range]':>24}  same params"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        hand = row["candidate"] == "hand"
        added = "-" if hand else f"{row['added_us_per_step']['median']:+.0f}"
        print(
            f"{row['candidate']:<14}{row['us_per_step']['median']:>9.0f}{ratio_text(row['ratio']):>26}"
            f"{added:>8}{row['cpu_us_per_step']['median']:>13.0f}{ratio_text(row['cpu_ratio']):>24}"
            f"  {'yes' if row['bit_identical_to_hand'] else 'no'}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="repetitions (default 5)")
    parser.add_argument("--steps", type=int, default=500, help="optimizer steps per call (default 500)")
    parser.add_argument(
        "--calls",
        type=int,
        default=1,
        help="timed calls per process after the warm-up; the fastest counts (default 1)",
    )
    parser.add_argument(
        "--candidates",
        nargs="+",
        default=None,
        choices=CANDIDATES,
        help="which loops to time (the hand-written loop is always included); default: all installed",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)

    if opts.child:
        print(RESULT_MARK + json.dumps(child(opts.child, opts.steps, opts.calls)), flush=True)
        return 0

    names = list(opts.candidates or CANDIDATES)
    if opts.candidates is None and importlib.util.find_spec("transformers") is None:
        names.remove("transformers")
    if "hand" not in names:
        names.insert(0, "hand")

    machine = _machine()
    print(
        f"workload: MLP {D_IN}->{HIDDEN}->{D_OUT}, batch {BATCH}, {opts.steps} steps, AdamW + linear "
        f"LambdaLR, no clipping/AMP/accumulation, 1 thread; {opts.reps} reps x {opts.calls} timed call(s)",
        flush=True,
    )
    keys = ("cpu", "cpu_count", "python", "torch", "accelerate", "transformers")
    print("machine: " + ", ".join(f"{k} {machine[k]}" for k in keys if k in machine), flush=True)

    reps: list[dict[str, dict[str, Any]]] = []
    started = time.perf_counter()
    for rep in range(opts.reps):
        shift = rep % len(names)
        order = names[shift:] + names[:shift]
        results = {name: _run_child(name, opts.steps, opts.calls) for name in order}
        reps.append(results)
        line = "  ".join(
            f"{n} {results[n]['us_per_step']:.0f} (cpu {results[n]['cpu_us_per_step']:.0f})" for n in names
        )
        descheduled = [n for n in names if results[n]["seconds"] > DESCHEDULED * results[n]["cpu_seconds"]]
        mark = f"  [descheduled: {', '.join(descheduled)}]" if descheduled else ""
        print(f"rep {rep + 1}/{opts.reps} µs/step: {line}{mark}", flush=True)

    rows = _rows(names, reps)
    print()
    _print_table(rows)
    print(f"\ntotal wall time {time.perf_counter() - started:.0f} s")
    noisy = sum(any(r[n]["seconds"] > DESCHEDULED * r[n]["cpu_seconds"] for n in names) for r in reps)
    if noisy:
        print(
            f"note: in {noisy} of {len(reps)} repetitions a timed call spent over "
            f"{(DESCHEDULED - 1) * 100:.0f}% of its wall time descheduled (the machine was busy); "
            "compare the CPU-time columns, or rerun with --calls 3"
        )

    st = next((row for row in rows if row["candidate"] == "statetrain"), None)
    if st is not None:
        wall, cpu = st["ratio"]["median"], st["cpu_ratio"]["median"]
        verdict = "met" if wall <= TARGET else "MISSED"
        print(
            f"target statetrain ≤ {TARGET:.2f}x hand-written (wall, median): {verdict} "
            f"({wall:.2f}x; CPU time {cpu:.2f}x)"
        )

    if opts.json:
        payload = {
            "workload": {
                "model": f"MLP {D_IN}->{HIDDEN}->{D_OUT}",
                "batch_size": BATCH,
                "steps": opts.steps,
                "optimizer": "AdamW + linear LambdaLR",
                "threads": 1,
                "timed_calls_per_process": opts.calls,
            },
            "reps": opts.reps,
            "target_ratio": TARGET,
            "machine": machine,
            "results": rows,
            "raw": reps,
        }
        with open(opts.json, "w") as f:
            json.dump(payload, f, indent=2)
        print(f"wrote {opts.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
