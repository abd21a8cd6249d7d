"""``statetrain`` command line: ``demo``, ``train``, ``plot``, ``summary``, ``diagram``, ``check-trace``,
``import-hf-checkpoint``, ``export-hf-checkpoint``.

Each command lives in its own module with a ``register(sub)`` that adds its parser and sets
``handler``; this module only assembles the parser and dispatches.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from statetrain.cli import check_trace, demo, diagram, hf_checkpoint, plot, summary, train

COMMANDS = (demo, train, plot, summary, diagram, check_trace, hf_checkpoint)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="statetrain", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``statetrain`` command; the return value is the process exit status."""
    options = build_parser().parse_args(argv)
    return int(options.handler(options))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
