"""``statetrain diagram``: print a machine's Mermaid state diagram, or refresh it inside a docs page."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from statetrain.cli.imports import load_machine

BEGIN_MARK = "<!-- BEGIN GENERATED DIAGRAM -->\n```mermaid\n"
END_MARK = "```\n<!-- END GENERATED DIAGRAM -->"


def update_markdown(path: Path, mermaid: str) -> None:
    """Replace the generated block of a docs page, keeping the prose around it."""
    text = path.read_text(encoding="utf-8")
    start, end = text.find(BEGIN_MARK), text.find(END_MARK)
    if start < 0 or end < start:
        raise SystemExit(f"{path} has no GENERATED DIAGRAM markers")
    path.write_text(text[: start + len(BEGIN_MARK)] + mermaid + text[end:], encoding="utf-8")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("diagram", help="print a machine's Mermaid state diagram")
    parser.add_argument(
        "--update",
        metavar="MARKDOWN",
        help="rewrite the mermaid block between the GENERATED DIAGRAM markers of this file instead of printing",
    )
    parser.add_argument("machine", nargs="?", help="package.module:attribute of a MachineSpec (default: the Trainer's)")
    parser.set_defaults(handler=run)


def run(options: argparse.Namespace) -> int:
    machine = load_machine(options.machine)
    machine.validate()
    if options.update:
        update_markdown(Path(options.update), machine.to_mermaid())
        return 0
    sys.stdout.write(machine.to_mermaid())
    return 0
