"""The run context: everything one ``train()`` call works on, handed to every state.

Persisted parts live in ``state`` (HF's ``TrainerState``) and ``engine`` (``EngineState``); the rest
is the live machinery (model, optimizer, data iterator, the current window) that a checkpoint
rebuilds rather than stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from statetrain.context.preemption import PreemptionRequest
from statetrain.context.state import EngineState, TrainerControl, TrainerState
from statetrain.data.batches import length_or_none
from statetrain.events.bus import EventBus
from statetrain.events.event import Event
from statetrain.optim.loss import NonFiniteWatch

if TYPE_CHECKING:
    import torch

    from statetrain.context.hooks import TrainerHooks


@dataclass(frozen=True)
class TrainingPlan:
    """How long the run is, fixed before the first step (HF ``set_initial_training_values``)."""

    num_train_epochs: int
    num_update_steps_per_epoch: int
    steps_in_epoch: int
    """Micro-batches per epoch."""
    max_steps: int
    num_examples: int
    num_train_samples: float
    total_train_batch_size: int
    gradient_accumulation_steps: int


class Run:
    """Mutable context of one training run. States read and write it; guards test it."""

    def __init__(
        self,
        trainer: TrainerHooks,
        plan: TrainingPlan,
        state: TrainerState,
        engine: EngineState,
    ) -> None:
        self.trainer = trainer
        self.args = trainer.args
        self.device = trainer.args.device
        self.bus: EventBus = trainer.bus
        self.accelerator = trainer.accelerator
        self.plan = plan
        self.state = state
        self.engine = engine
        self.refs: dict[str, Any] = trainer.callback_refs
        # live machinery, filled by the init state
        self.model: Any = None
        self.optimizer: Any = None
        self.step_optimizer: Any = None
        self.lr_scheduler: Any = None
        self.train_dataloader: Any = None
        self.scaler_in_use = False
        self.steps_may_be_skipped = False  # the optimizer may report a skipped step (grad scaler, DeepSpeed)
        self.defer_gradient_sync = False  # no_sync before a window's last micro-batch (DDP/FSDP, not DeepSpeed)
        self.zero_grad: Any = None  # clears the gradients after an update (fast_path.GradClearer or zero_grad)
        self.schedule_per_step = True  # the schedule steps after every update (not a plateau schedule)
        self.micro_step: Any = None  # the fused default training step (optim/plain_step.py), if it applies
        self.model_without_flops: Any = None  # a model the default floating_point_ops counts 0 for (skipped)
        self.single_batch_windows_plain = False  # a one-batch window needs no get_batch_samples call
        self.sync_flag_has_effects = True  # False: accelerate's sync flag is a plain attribute (not XLA)
        self.plain_loader = False  # the training loader's per-batch wrapper work is a no-op (fast_path)
        # data position within the epoch
        self.epoch_iterator: Any = None
        self.update_step = 0
        self.skip_batches = 0
        self.epoch_had_batches = False
        # the current accumulation window
        self.window: list[Any] = []
        self.window_pos = 0
        self.num_items_in_batch: Any = None
        self.window_complete = False
        # running sums and per-step values
        self.tr_loss: torch.Tensor | None = None
        self.grad_norm: Any = None
        self.learning_rate: float | None = None
        self.current_flos = 0.0
        self.start_time = 0.0
        self.initial_global_step = state.global_step
        self.output: Any = None
        # before the first epoch starts (the eval_on_start evaluation happens then)
        self.starting = True
        self.ignore_keys_for_eval: list[str] | None = None
        # resuming: the first epoch skips what the checkpoint consumed; RNG is restored once in place
        self.resuming = False
        self.pending_rng: dict[str, Any] | None = None
        # preemption: the pending signal, and the checkpoint written for it
        self.preemption = PreemptionRequest(coordinated=trainer.accelerator.num_processes > 1)
        self.preempted_checkpoint: Path | None = None
        self.nonfinite = NonFiniteWatch(self.device)
        self.last_saved_step = -1
        # objects with state_dict()/load_state_dict() that custom states want in every checkpoint
        self.checkpointables: dict[str, Any] = {}
        self.machine_model: Any = None
        """The object the ``transitions.Machine`` drives: its ``state`` is the state the driver runs."""
        self.dataset_length = length_or_none(trainer.train_dataset)
        """Length of the dataset this ``train()`` call started with (what a resume must match)."""

    def custom_state(self, name: str) -> dict[str, Any]:
        """The persisted JSON dict of custom state ``name`` (created empty on first use).

        Values must be JSON (numbers, strings, lists, dicts); they are written with every
        checkpoint and come back on resume before any state runs.
        """
        return self.engine.custom.setdefault(name, {})

    def register_checkpointable(self, name: str, obj: Any) -> None:
        """Save ``obj.state_dict()`` with every checkpoint and restore it through ``load_state_dict`` on resume.

        For what custom states add: a second optimizer and its schedule, a metric accumulator. The
        state dict is written pickle-free (tensors in safetensors, the rest JSON).
        """
        if not name.isidentifier():
            raise ValueError(f"checkpointable name {name!r} must be a Python identifier")
        if name in self.checkpointables and self.checkpointables[name] is not obj:
            raise ValueError(f"a checkpointable named {name!r} is already registered")
        for method in ("state_dict", "load_state_dict"):
            if not callable(getattr(obj, method, None)):
                raise TypeError(f"checkpointable {name!r} ({type(obj).__name__}) has no {method}() method")
        self.checkpointables[name] = obj

    @property
    def control(self) -> TrainerControl:
        return self.trainer.control

    @control.setter
    def control(self, value: TrainerControl) -> None:
        self.trainer.control = value

    def fire(self, event: Event, **payload: Any) -> dict[str, Any]:
        """Fire ``event`` with the HF trio and references; returns the (possibly replaced) payload.

        An event nobody listens to, and that clears no flag, costs one set lookup.
        """
        if event not in self.bus.active:
            return payload
        trainer = self.trainer
        trainer.control = self.bus.fire(event, self.args, self.state, trainer.control, self.refs, payload)
        return payload

    # --- facts the guards read -----------------------------------------------------------------
    @property
    def stop_requested(self) -> bool:
        control = self.trainer.control
        return control.should_epoch_stop or control.should_training_stop

    @property
    def epoch_exhausted(self) -> bool:
        return self.update_step >= self.plan.num_update_steps_per_epoch

    @property
    def budget_spent(self) -> bool:
        return self.state.global_step >= self.plan.max_steps

    @property
    def epochs_remaining(self) -> bool:
        """Whether another epoch should start after the current one (or start at all)."""
        next_epoch = self.engine.epoch_index + (1 if self.engine.epoch_ended else 0)
        return next_epoch < self.plan.num_train_epochs
