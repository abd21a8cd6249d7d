"""``statetrain check-trace``: validate a recorded event trace against a machine (and HF's grammar)."""

from __future__ import annotations

import argparse
import sys

from statetrain.cli.imports import load_machine


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("check-trace", help="validate a recorded event trace against a machine")
    parser.add_argument("trace", help="JSON-lines trace written by statetrain.testing.trace.TraceWriter")
    parser.add_argument("--machine", help="package.module:attribute of a MachineSpec (default: the Trainer's)")
    parser.set_defaults(handler=run)


def run(options: argparse.Namespace) -> int:
    return check_trace_command(options.trace, options.machine)


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
