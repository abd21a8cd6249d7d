"""accumulate: forward and backward of one micro-batch, gradients kept for the window's update."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from statetrain.events.event import Event
from statetrain.states.base import State

if TYPE_CHECKING:
    from statetrain.engine.run import Run


class AccumulateState(State):
    """Runs ``training_step`` on the next micro-batch; announces ``on_substep_end`` unless it closes the window."""

    name = "accumulate"
    reads = ("window", "window_pos", "num_items_in_batch", "engine.batches_in_epoch")
    writes = ("tr_loss", "window_complete", "engine.batches_in_epoch", "state.num_input_tokens_seen")
    fires = (Event.ON_SUBSTEP_END,)

    def run(self, run: Run) -> None:
        engine, plan, trainer = run.engine, run.plan, run.trainer
        inputs = run.window[run.window_pos]
        done = engine.batches_in_epoch + 1
        closes_window = done % plan.gradient_accumulation_steps == 0 or done == plan.steps_in_epoch
        run.accelerator.gradient_state._set_sync_gradients(closes_window)
        last_of_window = run.window_pos == len(run.window) - 1
        if run.accelerator.num_processes > 1 and not last_of_window:
            with run.accelerator.no_sync(model=run.model):
                step_loss = trainer.run_training_step(run.model, inputs, run.num_items_in_batch)
        else:
            step_loss = trainer.run_training_step(run.model, inputs, run.num_items_in_batch)
        tr_loss = run.tr_loss
        assert tr_loss is not None
        if run.args.logging_nan_inf_filter and not torch.isfinite(step_loss):
            # HF: a non-finite step loss counts as the mean of the losses since the last log.
            tr_loss += tr_loss / (1 + run.state.global_step - engine.globalstep_last_logged)
        else:
            if tr_loss.device != step_loss.device:
                raise ValueError(f"training_step returned a loss on {step_loss.device}; it must be on {tr_loss.device}")
            tr_loss += step_loss
        run.current_flos += float(trainer.floating_point_ops(inputs))
        engine.batches_in_epoch = done
        run.window_pos += 1
        run.epoch_had_batches = True
        run.window_complete = closes_window
        if not closes_window:
            run.fire(Event.ON_SUBSTEP_END)
