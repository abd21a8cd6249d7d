"""Arguments that need a state: switching a feature on without its state in the machine is an error.

A custom machine may leave states out (an evaluation-only loop has no ``save``); the arguments
must then not ask for them, or the request would be silently dropped.
"""

from __future__ import annotations

from typing import Any

from statetrain.engine.machine import MachineDefinitionError, MachineSpec


def _plain(value: Any) -> str:
    return str(getattr(value, "value", value))


def check_features_have_states(args: Any, spec: MachineSpec) -> None:
    """Name the argument, the missing state and the fix."""
    needs = [
        ("save_strategy", _plain(args.save_strategy) != "no", "save", "save_strategy='no'"),
        ("eval_strategy", _plain(args.eval_strategy) != "no", "evaluate", "eval_strategy='no'"),
        ("eval_on_start", bool(args.eval_on_start), "evaluate", "eval_on_start=False"),
        ("load_best_model_at_end", bool(args.load_best_model_at_end), "save", "load_best_model_at_end=False"),
    ]
    for field, enabled, state, fix in needs:
        if enabled and state not in spec.states:
            raise MachineDefinitionError(
                f"TrainingArguments.{field} needs the {state!r} state, which this machine does not have; "
                f"add the state with its transitions, or pass {fix}"
            )
