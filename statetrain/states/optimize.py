"""optimize: clip, step the optimizer and the schedule, zero the gradients, count the step."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from statetrain.distributed.processes import agree_on_preemption
from statetrain.events.event import Event
from statetrain.states.base import State

if TYPE_CHECKING:
    from statetrain.context.run import Run


def will_log(run: Run, next_step: int) -> bool:
    """Whether the flow's schedule logs ``next_step``: only then is an unclipped grad norm worth a sync."""
    args, state = run.args, run.state
    if next_step == 1 and args.logging_first_step:
        return True
    if args.logging_strategy == "steps":
        return next_step % state.logging_steps == 0
    if args.logging_strategy == "epoch":
        return run.update_step == run.plan.num_update_steps_per_epoch - 1
    return False


class OptimizeState(State):
    """One optimizer update, in HF's order.

    clip → on_pre_optimizer_step → step → on_optimizer_step → schedule → zero_grad → count → on_step_end.
    """

    name = "optimize"
    reads = ("model", "step_optimizer", "lr_scheduler", "engine.batches_in_epoch")
    writes = ("grad_norm", "learning_rate", "state.global_step", "state.epoch", "update_step", "preemption.agreed")
    fires = (Event.ON_PRE_OPTIMIZER_STEP, Event.ON_OPTIMIZER_STEP, Event.ON_STEP_END)

    def run(self, run: Run) -> None:
        args, state, engine, trainer = run.args, run.state, run.engine, run.trainer
        model = run.model
        grad_norm: Any = None
        if args.max_grad_norm > 0:
            grad_norm = trainer._clip_grad_norm(model, args.max_grad_norm)
        elif will_log(run, state.global_step + 1):
            grad_norm = trainer._clip_grad_norm(model, float("inf"))
        run.grad_norm = grad_norm
        if isinstance(grad_norm, torch.Tensor):
            run.nonfinite.note("grad_norm", grad_norm, state.global_step + 1)  # no sync: read when logging
        elif grad_norm is not None and not math.isfinite(grad_norm):
            run.nonfinite.seen("grad_norm", state.global_step + 1)
        if Event.ON_PRE_OPTIMIZER_STEP in run.bus.active:  # what run.fire checks first, without the call
            run.fire(Event.ON_PRE_OPTIMIZER_STEP)
        run.step_optimizer.step()
        if Event.ON_OPTIMIZER_STEP in run.bus.active:
            run.fire(Event.ON_OPTIMIZER_STEP)
        run.learning_rate = trainer._get_learning_rate()
        if run.schedule_per_step and not (run.steps_may_be_skipped and run.optimizer.step_was_skipped):
            run.lr_scheduler.step()
        run.zero_grad(model)
        state.global_step += 1
        state.epoch = engine.epoch_index + engine.batches_in_epoch / run.plan.steps_in_epoch
        run.update_step += 1
        run.fire(Event.ON_STEP_END)
        if run.preemption.coordinated:
            agree_on_preemption(run)  # several processes stop at the same step, or none does
