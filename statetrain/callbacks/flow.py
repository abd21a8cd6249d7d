"""DefaultFlowCallback: HF's rules for when to log, evaluate, save and stop (reference §2)."""

from __future__ import annotations

from typing import Any

from statetrain.callbacks.base import TrainerCallback
from statetrain.events.bus import IGNORES_REFS_MARKER


class DefaultFlowCallback(TrainerCallback):
    """Sets the control flags the machine's guards read; it decides, the machine acts."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        step = state.global_step
        if step == 1 and args.logging_first_step:
            control.should_log = True
        if args.logging_strategy == "steps" and step % state.logging_steps == 0:
            control.should_log = True
        if args.eval_strategy == "steps" and step % state.eval_steps == 0 and args.eval_delay <= step:
            control.should_evaluate = True
        if args.save_strategy == "steps" and state.save_steps > 0 and step % state.save_steps == 0:
            control.should_save = True
        if step >= state.max_steps:
            control.should_training_stop = True
            # The last step is always evaluated and saved under the "steps" strategies.
            if args.eval_strategy == "steps" and step % state.eval_steps != 0 and args.eval_delay <= step:
                control.should_evaluate = True
            if args.save_strategy == "steps":
                control.should_save = True
        return control

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if args.logging_strategy == "epoch":
            control.should_log = True
        if args.eval_strategy == "epoch" and args.eval_delay <= state.epoch:
            control.should_evaluate = True
        if args.save_strategy == "epoch":
            control.should_save = True
        return control


# the flow rules read only args, state and control: no references need building for them
for _rule in (DefaultFlowCallback.on_step_end, DefaultFlowCallback.on_epoch_end):
    setattr(_rule, IGNORES_REFS_MARKER, True)
