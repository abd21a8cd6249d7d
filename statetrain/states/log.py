"""log: report the mean loss since the last log, the grad norm and the learning rate."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from statetrain.events.event import Event
from statetrain.states.base import State

if TYPE_CHECKING:
    from statetrain.context.run import Run


class LogState(State):
    """Drains the running loss sum into one log entry (the only host sync of the loss)."""

    name = "log"
    reads = ("tr_loss", "grad_norm", "learning_rate", "engine.globalstep_last_logged")
    writes = ("state.log_history", "engine.total_loss_scalar", "engine.globalstep_last_logged")
    fires = (Event.ON_LOG,)

    def run(self, run: Run) -> None:
        state, engine, trainer = run.state, run.engine, run.trainer
        tr_loss = run.tr_loss
        assert tr_loss is not None
        scalar = trainer._mean_across_processes(tr_loss).item()
        tr_loss -= tr_loss
        logs: dict[str, Any] = {"loss": scalar / (state.global_step - engine.globalstep_last_logged)}
        grad_norm = run.grad_norm
        if grad_norm is not None:
            logs["grad_norm"] = grad_norm.item() if isinstance(grad_norm, torch.Tensor) else grad_norm
        logs["learning_rate"] = run.learning_rate if run.learning_rate is not None else trainer._get_learning_rate()
        engine.total_loss_scalar += scalar
        engine.globalstep_last_logged = state.global_step
        trainer.store_flos(run)
        if not run.args.logging_nan_inf_filter:  # (the filter replaces a bad loss: the sum says nothing)
            run.nonfinite.settle("loss", scalar)  # the sum of every loss noted since the last log
        if isinstance(grad_norm, torch.Tensor):
            run.nonfinite.settle("grad_norm", logs["grad_norm"], only=grad_norm)
        run.nonfinite.report(run)  # after the sync above: reading its flags waits for nothing more
        trainer.log(logs, run.start_time)
