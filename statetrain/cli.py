"""``statetrain`` command line: ``demo`` trains the built-in example, ``diagram`` prints a machine,
``import-hf-checkpoint`` / ``export-hf-checkpoint`` convert checkpoints to and from transformers' format."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from statetrain.checkpoint.hf_cli import CHECKPOINT_COMMANDS, add_checkpoint_commands, run_checkpoint_command
from statetrain.engine.machine import MachineSpec


def load_machine(path: str | None) -> MachineSpec:
    """The default machine, or the one at ``package.module:attribute`` (a spec or a factory)."""
    if path is None:
        from statetrain.engine.default_machine import default_machine

        return default_machine()
    module_name, _, attr = path.partition(":")
    if not attr:
        raise SystemExit(f"machine path {path!r} must look like package.module:attribute")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SystemExit(f"cannot load machine {path!r}: {exc}") from exc
    machine = target() if callable(target) and not isinstance(target, MachineSpec) else target
    if not isinstance(machine, MachineSpec):
        raise SystemExit(f"{path!r} is a {type(machine).__name__}, not a MachineSpec")
    return machine


BEGIN_MARK = "<!-- BEGIN GENERATED DIAGRAM -->\n```mermaid\n"
END_MARK = "```\n<!-- END GENERATED DIAGRAM -->"


def update_markdown(path: Path, mermaid: str) -> None:
    """Replace the generated block of a docs page, keeping the prose around it."""
    text = path.read_text(encoding="utf-8")
    start, end = text.find(BEGIN_MARK), text.find(END_MARK)
    if start < 0 or end < start:
        raise SystemExit(f"{path} has no GENERATED DIAGRAM markers")
    path.write_text(text[: start + len(BEGIN_MARK)] + mermaid + text[end:], encoding="utf-8")


def check_trace_command(path: str, machine_path: str | None) -> int:
    """Exit 0 when the trace follows the machine (and HF's grammar, for the default machine), else 1."""
    from statetrain.testing.grammar import GrammarError, check_trace
    from statetrain.testing.trace import TraceError, check_machine_trace, hf_trace, read_trace

    machine = load_machine(machine_path)
    try:
        trace = read_trace(path)
        check_machine_trace(trace, machine)
        if machine_path is None:
            check_trace(hf_trace(trace))
    except (TraceError, GrammarError) as error:
        print(f"{path}: invalid trace: {error}", file=sys.stderr)
        return 1
    print(f"{path}: {len(trace)} events follow the machine")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="statetrain", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a digits classifier on CPU and report held-out accuracy")
    demo.add_argument("--output-dir", default="statetrain_demo_output")
    demo.add_argument("--epochs", type=float, default=8)
    demo.add_argument("--no-progress", action="store_true", help="print logs instead of a progress bar")
    diagram = sub.add_parser("diagram", help="print a machine's Mermaid state diagram")
    diagram.add_argument(
        "--update",
        metavar="MARKDOWN",
        help="rewrite the mermaid block between the GENERATED DIAGRAM markers of this file instead of printing",
    )
    diagram.add_argument(
        "machine", nargs="?", help="package.module:attribute of a MachineSpec (default: the Trainer's)"
    )
    check = sub.add_parser("check-trace", help="validate a recorded event trace against a machine")
    check.add_argument("trace", help="JSON-lines trace written by statetrain.testing.trace.TraceWriter")
    check.add_argument("--machine", help="package.module:attribute of a MachineSpec (default: the Trainer's)")
    add_checkpoint_commands(sub)
    options = parser.parse_args(argv)

    if options.command in CHECKPOINT_COMMANDS:
        return run_checkpoint_command(options)

    if options.command == "check-trace":
        return check_trace_command(options.trace, options.machine)

    if options.command == "diagram":
        machine = load_machine(options.machine)
        machine.validate()
        if options.update:
            update_markdown(Path(options.update), machine.to_mermaid())
            return 0
        sys.stdout.write(machine.to_mermaid())
        return 0

    from statetrain.context.preemption import PREEMPTION_EXIT_CODE, TrainingPreempted
    from statetrain.demo import run_demo

    try:
        result = run_demo(options.output_dir, epochs=options.epochs, disable_tqdm=options.no_progress)
    except TrainingPreempted as stop:
        print(f"preempted: {stop}", file=sys.stderr)
        return PREEMPTION_EXIT_CODE
    print(f"loss: first logged {result.first_loss:.4f} -> last logged {result.last_loss:.4f}")
    print(f"held-out accuracy: {result.accuracy:.3f}")
    print(f"logs written to {result.output_dir}/")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
