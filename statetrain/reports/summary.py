"""The facts of one run as a small table: progress, best metric, final losses, speed, checkpoints."""

from __future__ import annotations

from typing import Any

from statetrain.reports.run_files import RunRecord


def summarize(run: RunRecord) -> dict[str, Any]:
    """The summary as plain data (what ``statetrain summary --json`` prints)."""
    state = run.state
    steps = [int(e["step"]) for e in run.log_history if isinstance(e.get("step"), int)]
    global_step = max([int(state.get("global_step", 0)), *steps])
    finished = run.last("train_runtime") is not None
    return {
        "run_dir": str(run.run_dir),
        "state_file": str(run.state_file) if run.state_file else None,
        "status": "finished" if finished else "not finished (running, stopped or crashed)",
        "global_step": global_step,
        "max_steps": state.get("max_steps"),
        "epoch": max(
            [float(state.get("epoch", 0) or 0), *(float(e["epoch"]) for e in run.log_history if "epoch" in e)]
        ),
        "num_train_epochs": state.get("num_train_epochs"),
        "best_metric": state.get("best_metric"),
        "metric_for_best_model": run.training_args.get("metric_for_best_model"),
        "best_global_step": state.get("best_global_step"),
        "best_model_checkpoint": state.get("best_model_checkpoint"),
        "last_logged_loss": run.last("loss"),
        "train_loss": run.last("train_loss"),
        "last_eval_loss": run.last("eval_loss"),
        "train_samples_per_second": run.last("train_samples_per_second"),
        "train_steps_per_second": run.last("train_steps_per_second"),
        "train_runtime_seconds": run.last("train_runtime"),
        "checkpoints": [
            {"path": str(s.path), "step": s.step, "verified": s.verified, "problem": s.problem}
            for s in run.verify_checkpoints()
        ],
    }


def format_summary(run: RunRecord) -> str:
    """The summary as an aligned two-column table, then one line per checkpoint."""
    facts = summarize(run)
    rows = [
        ("run", facts["run_dir"]),
        ("read from", facts["state_file"] or "JSON-lines log only"),
        ("status", facts["status"]),
        ("steps", _of(facts["global_step"], facts["max_steps"])),
        ("epochs", _of(_num(facts["epoch"]), facts["num_train_epochs"])),
        ("best metric", _best(facts)),
        ("last logged loss", _num(facts["last_logged_loss"])),
        ("train loss (mean)", _num(facts["train_loss"])),
        ("last eval loss", _num(facts["last_eval_loss"])),
        ("throughput", _throughput(facts)),
        ("wall time", "-" if facts["train_runtime_seconds"] is None else f"{facts['train_runtime_seconds']:.1f} s"),
        ("checkpoints", str(len(facts["checkpoints"])) if facts["checkpoints"] else "none on disk"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name.ljust(width)}  {value}" for name, value in rows]
    for ckpt in facts["checkpoints"]:
        verdict = "verifies" if ckpt["verified"] else f"DOES NOT VERIFY: {ckpt['problem']}"
        lines.append(f"{''.ljust(width)}  {ckpt['path']} (step {ckpt['step']}): {verdict}")
    return "\n".join(lines) + "\n"


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _of(done: Any, total: Any) -> str:
    return f"{done} of {total}" if total else str(done)


def _best(facts: dict[str, Any]) -> str:
    if facts["best_metric"] is None:
        return "- (no metric_for_best_model)"
    where = facts["best_model_checkpoint"] or "no checkpoint"
    name = f"{facts['metric_for_best_model']} " if facts["metric_for_best_model"] else ""
    return f"{name}{_num(facts['best_metric'])} at step {facts['best_global_step']} ({where})"


def _throughput(facts: dict[str, Any]) -> str:
    samples, steps = facts["train_samples_per_second"], facts["train_steps_per_second"]
    if samples is None:
        return "- (logged when train() finishes)"
    return f"{samples} samples/s, {steps} steps/s"
