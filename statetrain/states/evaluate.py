"""evaluate: run ``Trainer._evaluate`` mid-training (HF's hook), then track the best metric."""

from __future__ import annotations

from typing import TYPE_CHECKING

from statetrain.events.event import Event
from statetrain.states.base import State

if TYPE_CHECKING:
    from statetrain.context.run import Run


class EvaluateState(State):
    """Evaluates, steps a plateau schedule on the metric, and updates ``best_metric``.

    With ``save_strategy="best"`` it sets ``should_save`` to "this is a new best". The evaluation
    asked for by ``eval_on_start`` does neither (as in HF).
    """

    name = "evaluate"
    reads = ("starting", "ignore_keys_for_eval")
    writes = ("state.best_metric", "state.best_global_step", "control.should_save")
    fires = (Event.ON_PREDICTION_STEP, Event.ON_LOG, Event.ON_EVALUATE)

    def run(self, run: Run) -> None:
        trainer, args = run.trainer, run.args
        metrics = trainer._evaluate(None, run.ignore_keys_for_eval, skip_scheduler=run.starting)
        trainer._snapshot_stateful_callbacks()
        if run.starting:
            return
        is_new_best = trainer._determine_best_metric(metrics)
        if str(getattr(args.save_strategy, "value", args.save_strategy)) == "best":
            run.control.should_save = is_new_best
