"""``statetrain plot RUN_DIR ...``: PNG charts of one or several runs, overlaid."""

from __future__ import annotations

import argparse
from pathlib import Path

from statetrain.reports import plot_runs, read_run


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("plot", help="write PNG charts (loss, learning rate, grad norm, eval metrics) of runs")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a training output_dir")
    parser.add_argument("--out", help="folder for the PNGs (default: RUN_DIR/plots of the first run)")
    parser.set_defaults(handler=run)


def run(options: argparse.Namespace) -> int:
    try:
        runs = [read_run(path) for path in options.run_dirs]
    except FileNotFoundError as exc:
        raise SystemExit(f"statetrain plot: {exc}") from exc
    out = Path(options.out) if options.out else runs[0].run_dir / "plots"
    charts = plot_runs(runs, out)
    if not charts:
        print("nothing logged yet: no chart written")
        return 1
    for chart in charts:
        print(chart.path)
    return 0
