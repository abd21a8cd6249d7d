"""An evaluation-only loop: no epoch, no step, no optimizer update; one evaluation per dataset.

Built from nothing rather than from the default machine::

    init -> evaluate_next -> save -> evaluate_next -> ... -> done

``evaluate_next`` evaluates the next of the Trainer's named evaluation datasets (in the order of
``eval_dataset``) and records its metrics in the run's persisted custom state; a checkpoint
after each one makes a long evaluation sweep preemptible: a resumed sweep evaluates only the
datasets left and ends with the same results as an uninterrupted one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from statetrain.engine.machine import Guard, MachineSpec, Transition
from statetrain.events.event import Event
from statetrain.states import DoneState, InitState, SaveState
from statetrain.states.base import State

if TYPE_CHECKING:
    from statetrain.context.run import Run

__all__ = ["EvaluateNextState", "eval_only_machine", "sweep_results"]


def _datasets(run: Run) -> dict[str, Any]:
    datasets = run.trainer.eval_dataset
    if not isinstance(datasets, dict) or not datasets:
        raise ValueError("the evaluation-only machine needs eval_dataset as a non-empty dict of named datasets")
    return datasets


def sweep_results(run: Run) -> dict[str, dict[str, float]]:
    """Metrics per dataset name, in evaluation order, as the sweep recorded them."""
    results: dict[str, dict[str, float]] = run.custom_state(EvaluateNextState.name).setdefault("results", {})
    return results


def _remaining(run: Run) -> list[str]:
    done = sweep_results(run)
    return [name for name in _datasets(run) if name not in done]


class EvaluateNextState(State):
    """Evaluate the next dataset not yet done; ask for a checkpoint when saving is on."""

    name = "evaluate_next"
    reads = ("trainer.eval_dataset", "custom_state.evaluate_next")
    writes = ("custom_state.evaluate_next", "control.should_save")
    fires = (Event.ON_PREDICTION_STEP, Event.ON_LOG, Event.ON_EVALUATE)

    def setup(self, run: Run) -> None:
        _datasets(run)  # fail before any work when there is nothing to sweep

    def run(self, run: Run) -> None:
        remaining = _remaining(run)
        if not remaining:
            return
        name = remaining[0]
        metrics = run.trainer.evaluate(eval_dataset=_datasets(run)[name], metric_key_prefix=f"eval_{name}")
        sweep_results(run)[name] = {
            k: float(v) for k, v in metrics.items() if not k.endswith(("runtime", "per_second"))
        }
        save_strategy = str(getattr(run.args.save_strategy, "value", run.args.save_strategy))
        run.control.should_save = save_strategy != "no"


def eval_only_machine() -> MachineSpec:
    """The sweep: evaluate each named dataset once, checkpointing after each when saving is on."""
    more = Guard("datasets remain", lambda run: bool(_remaining(run)))
    should_save = Guard("should_save", lambda run: run.control.should_save)
    return MachineSpec(
        [InitState(), EvaluateNextState(), SaveState(), DoneState()],
        [
            Transition("init", "sweep", "evaluate_next", (more,)),
            Transition("init", "finish", "done"),
            Transition("evaluate_next", "save", "save", (should_save,)),
            Transition("evaluate_next", "next_dataset", "evaluate_next", (more,)),
            Transition("evaluate_next", "finish", "done"),
            Transition("save", "next_dataset", "evaluate_next", (more,)),
            Transition("save", "finish", "done"),
        ],
    )
