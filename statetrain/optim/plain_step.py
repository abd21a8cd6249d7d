"""HF's training step in one call, for a run in which nothing overrides or hears its layers.

The default step is HF's chain of overridable methods: ``_run_training_step`` -> ``training_step``
-> ``compute_loss`` (wrapped with the forward/loss events) -> ``_prepare_inputs`` ->
``_prepare_input`` per tensor -> the model -> the loss -> the backward wrapper. Each layer exists
so a subclass can replace it and a callback can hear it; on the tiny benchmark the chain costs
about as much as the rest of the engine together. When, for a whole ``train()`` call, no layer is
overridden (on the class or the instance) and the configuration needs none of the branches the
layers take (DeepSpeed, several GPUs in one process, a grad scaler, loss weights, an optimizer with
a train mode, cache emptying), :func:`plain_training_step` returns one function that does the same
arithmetic in the same order. Per micro-batch it still checks the two things that can change
during a run, and hands that micro-batch to the layered chain when either holds: a callback that
hears one of the step's events, or window loss weights.

``Trainer.fast_path = False`` always uses the chain; ``tests/engine/test_fast_path.py`` shows the
two give the same run bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any

import torch
from accelerate.utils import DistributedType

from statetrain.events.event import Event
from statetrain.optim.loss import loss_from_outputs

STEP_EVENTS = frozenset(
    {
        Event.ON_BEFORE_FORWARD,
        Event.ON_AFTER_FORWARD,
        Event.ON_AFTER_LOSS,
        Event.ON_BEFORE_BACKWARD,
        Event.ON_AFTER_BACKWARD,
    }
)
"""The events fired inside the step's layers: a callback that hears one needs the layered chain."""

LAYERS = (
    "_run_training_step",
    "training_step",
    "compute_loss",
    "compute_loss_context_manager",
    "_prepare_inputs",
    "_prepare_input",
)
"""The methods the fused step stands in for; overriding any one of them keeps the chain."""

MicroStep = Callable[[torch.nn.Module, Any, Any], torch.Tensor]

_is_training = attrgetter("training")


def configure_step_shortcuts(trainer: Any, run: Any, defaults: type) -> None:
    """Per ``train()``: the fused step, and the per-micro-batch calls that would change nothing.

    * ``run.micro_step``: :func:`plain_training_step`, or ``None`` for the layered chain.
    * ``run.model_without_flops``: the model when the default ``floating_point_ops`` counts 0 for
      it (no ``floating_point_ops``, no ``num_parameters``: a plain torch module), so the call is
      skipped while that model is the trainer's.
    * ``run.sync_flag_has_effects``: whether accelerate's ``_set_sync_gradients`` does more than
      set its flag (on XLA it marks a step); if not, it is only called when the flag changes.
    * ``run.single_batch_windows_plain``: a window of one micro-batch is read straight from the
      iterator when the default ``get_batch_samples`` would return it with no item count and no
      loss weights (the step state's own ``fetch_window`` not overridden either).

    ``Trainer.fast_path = False`` takes none of them.
    """
    if not trainer.fast_path:
        return
    run.micro_step = plain_training_step(trainer, defaults)
    model = trainer.model
    if _default_layer(trainer, defaults, "floating_point_ops") and not any(
        callable(getattr(model, name, None)) for name in ("floating_point_ops", "num_parameters")
    ):
        run.model_without_flops = model
    run.sync_flag_has_effects = trainer.accelerator.distributed_type == DistributedType.XLA
    run.single_batch_windows_plain = (
        all(_default_layer(trainer, defaults, name) for name in ("get_batch_samples", "_get_num_items_in_batch"))
        and not trainer.model_accepts_loss_kwargs  # no item count: _get_num_items_in_batch gives None
        and trainer.compute_loss_func is None
        and trainer._world_size <= 1  # a lone batch's loss weight is 1 only in one process
    )


def _default_layer(trainer: Any, defaults: type, name: str) -> bool:
    """Whether ``name`` is the default implementation, neither overridden on the class nor set on the
    instance (the events wrapper the Trainer sets around its own ``compute_loss`` counts as default)."""
    own = vars(trainer).get(name)
    return getattr(type(trainer), name) is getattr(defaults, name) and (
        own is None or own is trainer._events_compute_loss
    )


def plain_training_step(trainer: Any, defaults: type) -> MicroStep | None:
    """The fused step for this ``train()`` call, or ``None`` when the layered chain is needed.

    ``defaults`` is the class that defines the default layers (``TrainingStepMixin``): a layer
    resolved anywhere else on the trainer's class, or set on the instance, is an override.
    """
    if not all(_default_layer(trainer, defaults, name) for name in LAYERS):
        return None
    accelerator = trainer.accelerator
    if (
        accelerator.backward is not trainer._events_backward
        or not trainer._backward_is_plain
        or accelerator.scaler is not None
        or trainer._backward_kwargs is not None
        or trainer.compute_loss_func is not None
        or trainer.label_smoother is not None
        or trainer.loss_is_scaled_for_ga is not None
        or trainer._n_gpu > 1
        or trainer._optimizer_train_mode
        or trainer._deepspeed_input_dtype is not None
        or trainer.args.torch_empty_cache_steps is not None
        or trainer._plain_train_modules is None
    ):
        return None
    return _fused_step(trainer)


def _fused_step(trainer: Any) -> MicroStep:
    layered = trainer._run_training_step
    bus, device, modules = trainer.bus, trainer._device, trainer._plain_train_modules
    prepare, wrapped = trainer._prepare_input, trainer.model_wrapped
    accepts_loss_kwargs = trainer.model_accepts_loss_kwargs
    processes = _token_average_factor(trainer)
    # on a CPU run ``tensor.to(device)`` returns a CPU tensor itself: testing is_cpu is a quarter of the cost
    on_cpu = torch.device(device).type == "cpu"

    def move(value: Any) -> Any:
        return value.to(device) if type(value) is torch.Tensor else prepare(value)

    def step(model: torch.nn.Module, inputs: Any, num_items_in_batch: Any) -> torch.Tensor:
        if not bus.active.isdisjoint(STEP_EVENTS) or trainer._window_weights is not None:
            return layered(model, inputs, num_items_in_batch)
        if model is not wrapped or not all(map(_is_training, modules)):
            model.train()
        if type(inputs) is dict:
            inputs = {k: v if on_cpu and type(v) is torch.Tensor and v.is_cpu else move(v) for k, v in inputs.items()}
        else:
            inputs = prepare(inputs)
        if len(inputs) == 0:
            return layered(model, inputs, num_items_in_batch)  # the chain raises its error
        scaled = accepts_loss_kwargs and num_items_in_batch is not None
        if scaled:
            inputs = {**inputs, "num_items_in_batch": num_items_in_batch}
        outputs = model(**inputs)
        loss = outputs.get("loss") if type(outputs) is dict else None
        if loss is None:
            loss = loss_from_outputs(outputs, inputs, type(model).__name__)
        if scaled and processes > 1:
            loss = loss * processes
        elif not scaled and trainer.current_gradient_accumulation_steps != 1:
            loss = loss / trainer.current_gradient_accumulation_steps
        loss.backward()
        return loss.detach()

    return step


def _token_average_factor(trainer: Any) -> int:
    """The factor HF's ``average_tokens_across_devices`` puts on a loss normalised by the global count."""
    if not trainer.args.average_tokens_across_devices:
        return 1
    return int(trainer.accelerator.num_processes)
