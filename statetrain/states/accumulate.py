"""accumulate: forward and backward of one micro-batch, gradients kept for the window's update."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from statetrain.events.event import Event
from statetrain.optim.loss import NonFiniteLossError
from statetrain.states.base import State

if TYPE_CHECKING:
    from statetrain.context.run import Run

logger = logging.getLogger(__name__)


class AccumulateState(State):
    """Runs ``training_step`` on the next micro-batch; announces ``on_substep_end`` unless it closes the window.

    A non-finite step loss follows ``nan_inf_policy``: ``filter`` is HF's ``logging_nan_inf_filter``
    rule; ``raise`` stops at once; ``skip`` and ``stop`` finish the window, then discard its
    gradients so the update changes nothing, and ``stop`` also asks for a checkpoint and the end.
    """

    name = "accumulate"
    reads = ("window", "window_pos", "num_items_in_batch", "engine.batches_in_epoch")
    writes = (
        "tr_loss",
        "window_complete",
        "engine.batches_in_epoch",
        "state.num_input_tokens_seen",
        "control.should_training_stop",
        "control.should_save",
    )
    fires = (Event.ON_SUBSTEP_END,)

    def run(self, run: Run) -> None:
        engine, plan, trainer = run.engine, run.plan, run.trainer
        inputs = run.window[run.window_pos]
        done = engine.batches_in_epoch + 1
        last_of_window = run.window_pos == len(run.window) - 1
        # A window shorter than the accumulation is the last of its pass (the planned remainder, or
        # an iterable dataset that ran out): it takes its update here, so windows never span epochs
        # and a pass shorter than one window still trains (HF carries such gradients over instead).
        closes_window = (
            done % plan.gradient_accumulation_steps == 0
            or done == plan.steps_in_epoch
            or (last_of_window and len(run.window) < plan.gradient_accumulation_steps)
        )
        gradient_state = run.accelerator.gradient_state
        if run.sync_flag_has_effects or gradient_state.sync_gradients is not closes_window:
            gradient_state._set_sync_gradients(closes_window)
        # DeepSpeed keeps its own accumulation boundary (set from sync_gradients), so no no_sync, as in HF
        micro_step = run.micro_step or trainer._run_training_step
        if run.defer_gradient_sync and not last_of_window:
            with run.accelerator.no_sync(model=run.model):
                step_loss = micro_step(run.model, inputs, run.num_items_in_batch)
        else:
            step_loss = micro_step(run.model, inputs, run.num_items_in_batch)
        tr_loss = run.tr_loss
        assert tr_loss is not None
        if run.args.nan_inf_policy == "filter":
            step = run.state.global_step + 1
            if not run.args.logging_nan_inf_filter:
                run.nonfinite.note("loss", step_loss, step)  # read at the next log, no sync here
                _add_loss(tr_loss, step_loss)
            elif run.device.type != "cpu":  # an accelerator: no host sync to test the loss
                run.nonfinite.note("loss", step_loss, step)
                add_filtered_loss(tr_loss, step_loss, step - engine.globalstep_last_logged)
            elif not torch.isfinite(step_loss):
                # HF: a non-finite step loss counts as the mean of the losses since the last log.
                run.nonfinite.seen("loss", step)  # HF's check synced already
                tr_loss += tr_loss / (step - engine.globalstep_last_logged)
            else:
                _add_loss(tr_loss, step_loss)
        else:
            self._guard(run, tr_loss, step_loss, done, closes_window)
        if trainer.model is not run.model_without_flops:
            run.current_flos += float(trainer.floating_point_ops(inputs))
        if run.args.include_num_input_tokens_seen != "no":
            trainer._track_num_input_tokens(run, inputs)
        engine.batches_in_epoch = done
        run.window_pos += 1
        run.epoch_had_batches = True
        run.window_complete = closes_window
        if not closes_window:
            run.fire(Event.ON_SUBSTEP_END)

    def _guard(self, run: Run, tr_loss: torch.Tensor, step_loss: torch.Tensor, done: int, closes: bool) -> None:
        """The ``skip``/``raise``/``stop`` policies: keep the loss sum and the update free of NaN/Inf."""
        state, engine = run.state, run.engine
        guard = run.trainer.nan_inf_guard
        guard.open(run, tr_loss)
        if torch.isfinite(step_loss):
            _add_loss(tr_loss, step_loss)
        else:
            where = (
                f"global_step {state.global_step} (computing step {state.global_step + 1}), micro-batch "
                f"{run.window_pos + 1} of {len(run.window)} in the window (micro-batch {done} of epoch "
                f"{engine.epoch_index})"
            )
            if run.args.nan_inf_policy == "raise":
                raise NonFiniteLossError(
                    f"training loss is {step_loss.item()} at {where}; nan_inf_policy='raise'. Use 'skip' to "
                    "drop such updates or 'stop' to end with a checkpoint"
                )
            guard.mark(f"{step_loss.item()} at {where}")
            run.nonfinite.seen("loss", state.global_step + 1)
        if not closes:
            return
        start, first_bad = guard.close()
        bad = first_bad is not None
        if run.accelerator.num_processes > 1:
            # every process must drop the same update, or their parameters would drift apart
            flag = torch.tensor([int(bad)], device=tr_loss.device)
            bad = bool(run.accelerator.gather(flag).any())
        if not bad:
            return
        if start is not None:
            # nothing of this window enters the logged loss: the step counts as the mean of the steps
            # since the last log (0 when it is the first), so the logged mean is that of the good steps
            tr_loss.copy_(start)
            steps = state.global_step - engine.globalstep_last_logged
            if steps > 0:
                tr_loss += tr_loss / steps
        _discard_gradients(run)
        step = state.global_step + 1
        reason = first_bad or "another process"
        if run.args.nan_inf_policy == "stop":
            logger.warning(
                "nan_inf_policy='stop': the training loss was %s; step %d leaves the parameters "
                "unchanged, then training stops with a checkpoint",
                reason,
                step,
            )
            run.control.should_training_stop = True
            run.control.should_save = True
        else:
            logger.warning(
                "nan_inf_policy='skip': the training loss was %s; the update of step %d is skipped "
                "(its gradients are discarded)",
                reason,
                step,
            )


def add_filtered_loss(tr_loss: torch.Tensor, step_loss: torch.Tensor, steps_since_log: int) -> None:
    """HF's ``logging_nan_inf_filter`` rule without reading the loss on the host: a non-finite step
    loss adds ``tr_loss / steps_since_log`` instead. Selected on the device, so the same sum, bit
    for bit, as testing ``isfinite`` on the host and branching."""
    _add_loss(tr_loss, torch.where(torch.isfinite(step_loss), step_loss, tr_loss / steps_since_log))


def _add_loss(tr_loss: torch.Tensor, step_loss: torch.Tensor) -> None:
    if tr_loss.device != step_loss.device:
        raise ValueError(f"training_step returned a loss on {step_loss.device}; it must be on {tr_loss.device}")
    tr_loss += step_loss


def _discard_gradients(run: Run) -> None:
    """Make the coming optimizer step a no-op.

    Without a grad scaler the gradients are dropped: torch optimizers leave a parameter without a
    gradient untouched (no moment, step count or weight-decay update). With a scaler they are
    made NaN instead, so the scaler skips the step the way it skips any overflow (and the schedule
    waits, as it does for every skipped scaler step).
    """
    if run.scaler_in_use:
        for param in run.model.parameters():
            if param.grad is not None:
                param.grad.fill_(float("nan"))
    else:
        run.model.zero_grad(set_to_none=True)
