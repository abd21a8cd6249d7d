"""done: the closing summary log and ``on_train_end``; builds the ``TrainOutput``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from statetrain.context.metrics import TrainOutput, speed_metrics
from statetrain.events.event import Event
from statetrain.states.base import State

if TYPE_CHECKING:
    from statetrain.context.run import Run


class DoneState(State):
    """``train_loss`` is the mean step loss over the steps this call ran (HF's definition)."""

    name = "done"
    reads = ("tr_loss", "engine.total_loss_scalar", "start_time")
    writes = ("output", "state.log_history")
    fires = (Event.ON_LOG, Event.ON_TRAIN_END)

    def run(self, run: Run) -> None:
        state, engine, trainer = run.state, run.engine, run.trainer
        tr_loss = run.tr_loss
        assert tr_loss is not None
        engine.total_loss_scalar += trainer._mean_across_processes(tr_loss).item()
        tr_loss.zero_()
        run.nonfinite.report(run)
        steps = state.global_step - run.initial_global_step
        # the loss sums travel with checkpoints, so this is the mean over the whole run, resumed or not
        train_loss = engine.total_loss_scalar / max(state.global_step, 0.001)
        metrics = speed_metrics(
            "train",
            run.start_time,
            num_samples=run.plan.num_train_samples * steps / max(run.plan.max_steps, 1),
            num_steps=steps,
        )
        trainer.store_flos(run)
        metrics["total_flos"] = state.total_flos
        metrics["train_loss"] = train_loss
        trainer._memory_tracker.stop_and_report("train", metrics)  # skip_memory_metrics=False
        trainer.log(metrics)
        trainer._finish_checkpoints()
        run.fire(Event.ON_TRAIN_END)
        run.output = TrainOutput(state.global_step, train_loss, metrics)
