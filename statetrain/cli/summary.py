"""``statetrain summary RUN_DIR``: a table of what a run did, read from the files it wrote."""

from __future__ import annotations

import argparse
import json
import sys

from statetrain.reports import format_summary, read_run, summarize


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("summary", help="print steps, best metric, losses, speed and checkpoints of a run")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a training output_dir")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(handler=run)


def run(options: argparse.Namespace) -> int:
    try:
        record = read_run(options.run_dir)
    except FileNotFoundError as exc:
        raise SystemExit(f"statetrain summary: {exc}") from exc
    if options.json:
        json.dump(summarize(record), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_summary(record))
    return 0
