"""preempt: a signal asked the run to stop; write a checkpoint at this window boundary."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from statetrain.checkpoint.store import PREFIX
from statetrain.events.event import Event
from statetrain.states.base import State

if TYPE_CHECKING:
    from statetrain.context.run import Run


class PreemptState(State):
    """Entered only between windows, so no partial window is ever saved or lost.

    When the save state already wrote this step's checkpoint it is reused. Afterwards the machine
    goes to ``done`` (summary log, ``on_train_end``) and ``train()`` raises ``TrainingPreempted``.
    """

    name = "preempt"
    reads = ("preemption", "state.global_step")
    writes = ("preempted_checkpoint",)
    fires = (Event.ON_PUSH_BEGIN,)  # push_to_hub pushes the checkpoint it writes

    def run(self, run: Run) -> None:
        existing = Path(run.args.output_dir) / f"{PREFIX}-{run.state.global_step}"
        # with several processes the folder may live on another node; the save state's commit was agreed
        if run.last_saved_step == run.state.global_step and (existing.is_dir() or run.preemption.coordinated):
            run.preempted_checkpoint = existing
        else:
            run.engine.current_state = self.name
            run.preempted_checkpoint = run.trainer._save_checkpoint(run)
            run.last_saved_step = run.state.global_step
