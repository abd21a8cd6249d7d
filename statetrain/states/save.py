"""save: write a complete, verified checkpoint, then announce ``on_save``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from statetrain.events.event import Event
from statetrain.states.base import State

if TYPE_CHECKING:
    from statetrain.context.run import Run


class SaveState(State):
    """The checkpoint is committed (renamed into place, manifest verified) before ``on_save`` fires."""

    name = "save"
    reads = ("model", "optimizer", "lr_scheduler", "state", "engine")
    writes = ("state.best_model_checkpoint", "control.should_save")
    fires = (Event.ON_PUSH_BEGIN, Event.ON_SAVE)  # on_push_begin: push_to_hub pushes the checkpoint

    def run(self, run: Run) -> None:
        run.engine.current_state = self.name
        if run.trainer._save_checkpoint(run) is None:  # refused (non-finite weights): nothing to announce
            run.control.should_save = False
            return
        run.last_saved_step = run.state.global_step
        run.fire(Event.ON_SAVE)
