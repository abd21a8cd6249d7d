"""PNG charts of one or more runs: loss, learning rate, grad norm and each eval metric against step.

Drawn with matplotlib's object API on the Agg canvas, so nothing needs a display and no global
backend is switched. Each :class:`Chart` keeps the series it drew, read back from the plotted lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from statetrain.reports.run_files import RunRecord

TRAINING_SERIES = (("loss", "training loss"), ("learning_rate", "learning rate"), ("grad_norm", "grad norm"))


@dataclass
class Chart:
    """One PNG and, per run label, the (steps, values) drawn in it."""

    path: Path
    key: str
    lines: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)


def plot_runs(runs: list[RunRecord], out_dir: str | Path, labels: list[str] | None = None) -> list[Chart]:
    """Write one PNG per logged series into ``out_dir``, every run overlaid; returns what was drawn.

    ``labels`` name the runs in the legends (default: their folder names).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - exercised only without the cli extra
        raise SystemExit("plots need matplotlib: pip install 'statetrain[cli]'") from exc
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = labels or run_labels(runs)
    if len(labels) != len(runs):
        raise ValueError(f"{len(labels)} labels for {len(runs)} runs")
    metrics: dict[str, None] = {}
    for run in runs:
        metrics.update(dict.fromkeys(run.eval_metrics()))
    charts = []
    for key, title in (*TRAINING_SERIES, *((m, m.replace("_", " ")) for m in metrics)):
        if not any(run.series(key)[0] for run in runs):
            continue
        figure = Figure(figsize=(7, 4), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        for run, label in zip(runs, labels, strict=True):
            steps, values = run.series(key)
            if steps:
                axes.plot(steps, values, marker="." if len(steps) < 50 else None, label=label)
        axes.set_xlabel("step")
        axes.set_ylabel(title)
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend()
        chart = Chart(out / f"{key}.png", key)
        for line in axes.get_lines():
            xs = np.asarray(line.get_xdata(), dtype=float).tolist()
            ys = np.asarray(line.get_ydata(), dtype=float).tolist()
            chart.lines[str(line.get_label())] = (xs, ys)
        figure.savefig(chart.path)
        charts.append(chart)
    return charts


def run_labels(runs: list[RunRecord]) -> list[str]:
    """Folder names, or full paths where two runs share a name."""
    names = [run.name for run in runs]
    return [run.name if names.count(run.name) == 1 else str(run.run_dir) for run in runs]
