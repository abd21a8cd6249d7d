"""The training-step half of the Trainer: HF's overridable per-micro-batch methods.

``training_step``, ``compute_loss`` (with the forward/loss/backward events wrapped around them),
input preparation, the accumulation window's batches and item count, clipping and FLOP counting.
The ``accumulate`` and ``optimize`` states call these; a subclass overrides them as in HF.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from statetrain.events.event import Event
from statetrain.optim.fused import BackwardKwargs, backward_kwargs
from statetrain.optim.loss import LabelSmoother, WindowWeights, count_label_items, loss_from_outputs
from statetrain.trainer.counters import track_num_input_tokens

if TYPE_CHECKING:
    from statetrain.context.run import Run


_EXHAUSTED = object()
"""What ``next`` returns for a finished epoch iterator in ``get_batch_samples``."""


class TrainingStepMixin:
    """Per-micro-batch work of the Trainer, mixed into it."""

    _backward_kwargs: BackwardKwargs | None = None
    _events_compute_loss: Any = None  # the events wrapper set on the instance (the default compute_loss)
    _events_backward: Any = None  # the events wrapper set on the accelerator
    _backward_is_plain = False  # that wrapper calls loss.backward() itself

    if TYPE_CHECKING:  # what the Trainer provides
        args: Any
        accelerator: Any
        bus: Any
        state: Any
        model: nn.Module
        compute_loss_func: Any
        label_smoother: LabelSmoother | None
        model_accepts_loss_kwargs: bool
        current_flos: float
        model_wrapped: Any
        optimizer: Any
        loss_is_scaled_for_ga: bool | None
        current_gradient_accumulation_steps: int
        _device: torch.device
        _n_gpu: int
        _world_size: int
        _loss_shifts_labels: bool
        _label_smoother_shifts: bool
        _optimizer_train_mode: bool
        is_deepspeed_enabled: bool
        _deepspeed_input_dtype: torch.dtype | None
        _plain_train_modules: list[nn.Module] | None
        _window_weights: WindowWeights | None
        _flos_parameters: FlopsSource | None

        def _fire(self, event: Event, **payload: Any) -> dict[str, Any]: ...
        def _get_signature_columns(self) -> list[str]: ...
        def _get_learning_rate(self) -> float: ...

    def _choose_backward_kwargs(self) -> None:
        """Decide, once per ``train()``, what every backward passes to accelerate (HF's rules)."""
        self._backward_kwargs = backward_kwargs(self.args.optim, self.is_deepspeed_enabled, self._get_learning_rate)

    def _run_training_step(self, model: nn.Module, inputs: Any, num_items_in_batch: Any) -> torch.Tensor:
        """``training_step`` bracketed by the after-backward event (the state calls this)."""
        loss = self.training_step(model, inputs, num_items_in_batch)
        if self.bus.wants(Event.ON_AFTER_BACKWARD):
            loss = self._fire(Event.ON_AFTER_BACKWARD, inputs=inputs, loss=loss)["loss"]
        return loss

    def training_step(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        """Forward, loss and backward of one micro-batch (HF semantics); returns the detached loss.

        One deliberate difference: when the loss is a per-micro-batch mean that the model could not
        normalise over the window (no loss kwargs, no ``compute_loss_func``), it is weighted by the
        micro-batch's share of the window's label items instead of divided by the window length,
        so accumulation gives the full batch's gradient (huggingface/transformers#37766).
        """
        plain = self._plain_train_modules
        if plain is None or model is not self.model_wrapped or not all(m.training for m in plain):
            model.train()
        if self._optimizer_train_mode:
            self.optimizer.train()  # type: ignore[union-attr]
        weights = self._window_weights
        share = weights.share_of(inputs) if weights is not None and self.loss_is_scaled_for_ga is None else None
        inputs = self._prepare_inputs(inputs)
        with self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
        del inputs
        steps = self.args.torch_empty_cache_steps
        if steps is not None and self.state.global_step % steps == 0 and torch.cuda.is_available():
            torch.cuda.empty_cache()
        if self._n_gpu > 1:
            loss = loss.mean()
        if self.loss_is_scaled_for_ga is not None:
            scaled = self.loss_is_scaled_for_ga
        else:
            scaled = (
                self.model_accepts_loss_kwargs and num_items_in_batch is not None
            ) or self.compute_loss_func is not None
        if not scaled and share is not None:
            loss = loss * share.to(loss.dtype)
        elif not scaled and self.current_gradient_accumulation_steps != 1:
            loss = loss / self.current_gradient_accumulation_steps
        extra = self._backward_kwargs  # chosen once per train(): LOMO's learning rate, DeepSpeed's scaling
        if extra is None:
            self.accelerator.backward(loss)
        else:
            self.accelerator.backward(loss, **extra())
        return loss.detach()

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        """The model's loss (or ``compute_loss_func``'s, or the label smoother's), firing after-forward
        and after-loss (HF semantics)."""
        bus = self.bus
        if (self.compute_loss_func is not None or self.label_smoother is not None) and "labels" in inputs:
            inputs = dict(inputs)
            labels = inputs.pop("labels")
        else:
            labels = None
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            inputs = {**inputs, "num_items_in_batch": num_items_in_batch}
        outputs = model(**inputs)
        if bus.wants(Event.ON_AFTER_FORWARD):
            outputs = self._fire(Event.ON_AFTER_FORWARD, inputs=inputs, outputs=outputs)["outputs"]
        if self.compute_loss_func is not None:
            loss = self.compute_loss_func(outputs, labels, num_items_in_batch=num_items_in_batch)
        elif labels is not None and self.label_smoother is not None:
            loss = self.label_smoother(
                outputs, labels, shift_labels=self._label_smoother_shifts, num_items_in_batch=num_items_in_batch
            )
        else:
            loss = loss_from_outputs(outputs, inputs, type(model).__name__)
        if (
            self.args.average_tokens_across_devices
            and (self.model_accepts_loss_kwargs or self.compute_loss_func is not None)
            and num_items_in_batch is not None
            and self.accelerator.num_processes > 1
        ):
            loss = loss * self.accelerator.num_processes
        self._loss_events_fired = True
        if bus.wants(Event.ON_AFTER_LOSS):
            loss = self._fire(Event.ON_AFTER_LOSS, inputs=inputs, outputs=outputs, loss=loss)["loss"]
        return (loss, outputs) if return_outputs else loss

    def _wrap_compute_loss_with_events(self) -> None:
        """Fire the forward/loss events at ``compute_loss``'s boundaries, even when a subclass overrides it.

        Entry fires before-forward (the inputs may be replaced). An override that does not reach the
        default implementation gets after-forward and after-loss at its exit instead of inside.
        """
        inner = self.compute_loss
        self._loss_events_fired = False

        @functools.wraps(inner)
        def compute_loss(
            model: nn.Module,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
            **kwargs: Any,
        ) -> Any:
            bus = self.bus
            if bus.wants(Event.ON_BEFORE_FORWARD):
                inputs = self._fire(Event.ON_BEFORE_FORWARD, inputs=inputs)["inputs"]
            self._loss_events_fired = False
            result = inner(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch, **kwargs
            )
            if self._loss_events_fired or not (bus.wants(Event.ON_AFTER_FORWARD) or bus.wants(Event.ON_AFTER_LOSS)):
                return result
            loss, outputs = result if return_outputs else (result, None)
            if bus.wants(Event.ON_AFTER_FORWARD):
                outputs = self._fire(Event.ON_AFTER_FORWARD, inputs=inputs, outputs=outputs)["outputs"]
            if bus.wants(Event.ON_AFTER_LOSS):
                loss = self._fire(Event.ON_AFTER_LOSS, inputs=inputs, outputs=outputs, loss=loss)["loss"]
            return (loss, outputs) if return_outputs else loss

        self.compute_loss = compute_loss  # type: ignore[method-assign]
        self._events_compute_loss = compute_loss  # how the fused step (optim/plain_step.py) knows it

    def compute_loss_context_manager(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast comes from accelerate's prepared model, so nothing is added here (as HF)."""
        return contextlib.nullcontext()

    def _wrap_backward_with_events(self) -> None:
        """Fire before-backward at the backward boundary, even inside an overridden ``training_step``."""
        accelerator = self.accelerator
        original = accelerator.backward
        # accelerate divides by its accumulation steps (1 here: the engine accumulates) before a
        # plain backward when no scaler or engine wrapper is involved; x / 1 == x, so skip the op.
        from accelerate.utils import DistributedType

        plain = accelerator.gradient_accumulation_steps == 1 and accelerator.distributed_type in (
            DistributedType.NO,
            DistributedType.MULTI_CPU,
        )

        def backward(loss: torch.Tensor, **kwargs: Any) -> None:
            if self.bus.wants(Event.ON_BEFORE_BACKWARD):
                loss = self._fire(Event.ON_BEFORE_BACKWARD, loss=loss)["loss"]
            if plain and not kwargs and accelerator.scaler is None:
                loss.backward()
            else:
                original(loss, **kwargs)

        accelerator.backward = backward  # type: ignore[method-assign]
        self._events_backward, self._backward_is_plain = backward, plain

    def _prepare_input(self, data: Any) -> Any:
        if type(data) is dict:  # the common batch, without the Mapping ABC check
            return {k: self._prepare_input(v) for k, v in data.items()}
        if isinstance(data, Mapping):
            return type(data)({k: self._prepare_input(v) for k, v in data.items()})  # type: ignore[call-arg]
        if isinstance(data, (tuple, list)):
            return type(data)(self._prepare_input(v) for v in data)
        if isinstance(data, torch.Tensor):
            dtype = self._deepspeed_input_dtype
            if dtype is not None and (torch.is_floating_point(data) or torch.is_complex(data)):
                # as HF: DeepSpeed runs the model in its own dtype, so float inputs take it too
                return data.to(device=self._device, dtype=dtype)
            return data.to(device=self._device)
        return data

    def _prepare_inputs(self, inputs: Any) -> Any:
        inputs = self._prepare_input(inputs)
        if len(inputs) == 0:
            raise ValueError(
                "The batch is empty: the training dataset holds no key the model accepts "
                f"({', '.join(self._get_signature_columns())})"
            )
        return inputs

    def get_batch_samples(
        self, epoch_iterator: Iterator[Any], num_batches: int, device: torch.device
    ) -> tuple[list[Any], Any]:
        """Fetch one window of up to ``num_batches`` micro-batches and count its label items.

        When the count cannot reach the loss (the model takes no loss kwargs and there is no
        ``compute_loss_func``), it is kept as the window's weights for ``training_step`` instead.
        """
        batches: list[Any] = []
        for _ in range(num_batches):
            batch = next(epoch_iterator, _EXHAUSTED)
            if batch is _EXHAUSTED:
                break
            batches.append(batch)
        num_items = self._get_num_items_in_batch(batches, device)
        self._window_weights = None
        if (
            (len(batches) > 1 or self._world_size > 1)  # a lone micro-batch's share is exactly 1
            and num_items is None
            and not self.model_accepts_loss_kwargs
            and self.compute_loss_func is None
            and self.loss_is_scaled_for_ga is None
            and self._n_gpu <= 1
        ):
            counts = [count_label_items(batch, self._loss_shifts_labels) for batch in batches]
            if all(count is not None for count in counts):
                spans = self.args.average_tokens_across_devices and self._world_size > 1
                self._window_weights = WindowWeights.of(
                    batches,
                    [count for count in counts if count is not None],
                    device,
                    spans=self.accelerator if spans else None,
                )
        return batches, num_items

    def _get_num_items_in_batch(self, batches: list[Any], device: torch.device) -> Any:
        """Labels != -100 over the whole window (shifted for causal LMs), summed across processes."""
        if not (self.model_accepts_loss_kwargs or self.compute_loss_func is not None):
            return None
        if not batches or not isinstance(batches[0], Mapping) or "labels" not in batches[0]:
            return None
        try:
            counted = [
                b["shift_labels"]
                if "shift_labels" in b
                else b["labels"][..., 1:]
                if self._loss_shifts_labels
                else b["labels"]
                for b in batches
            ]
            num_items: Any = sum(labels.ne(-100).sum() for labels in counted)
        except (TypeError, AttributeError):
            return None
        if self.args.average_tokens_across_devices and self._world_size > 1:
            num_items = self.accelerator.gather(num_items.to(device)).sum()
        if torch.is_tensor(num_items):
            # HF divides by the tensor/context/sequence-parallel sizes (1 here), which makes the count a
            # float tensor; a compute_loss_func sees the same dtype as under HF
            num_items = num_items.to(device) / 1
        return num_items

    def _clip_grad_norm(self, model: nn.Module, max_norm: float) -> torch.Tensor:
        """Clip to ``max_norm`` (``inf`` only measures); returns the pre-clip total norm."""
        return self.accelerator.clip_grad_norm_(model.parameters(), max_norm)

    def _mean_across_processes(self, value: torch.Tensor) -> torch.Tensor:
        if self.accelerator.num_processes > 1:
            return self.accelerator.gather(value).mean()
        return value

    def _track_num_input_tokens(self, run: Run, inputs: Any) -> None:
        """Count one micro-batch's input tokens into ``state.num_input_tokens_seen`` (HF's rules)."""
        track_num_input_tokens(self, run, inputs)

    def floating_point_ops(self, inputs: Any) -> float:
        """FLOPs of one micro-batch's forward and backward, summed into ``state.total_flos``.

        The model's own ``floating_point_ops`` when it has one (transformers 4.x models, custom
        models); otherwise transformers 5.24's estimate, 6 x main-input tokens x non-embedding
        parameters, for models with ``num_parameters``. The parameter count is cached per model:
        HF recounts it (walking every module) on each micro-batch.
        """
        model = self.model
        cached = self._flos_parameters
        if cached is None or cached[0] is not model:
            cached = self._flos_parameters = _flops_source(model)
        own, main_input, count = cached[1:]
        if own is not None:
            return float(own(inputs))
        if count is None or not ((type(inputs) is dict or isinstance(inputs, Mapping)) and main_input in inputs):
            return 0.0
        return float(6 * inputs[main_input].numel() * count)

    def store_flos(self, run: Run | None = None) -> None:
        flos = run.current_flos if run is not None else self.current_flos
        if self.accelerator.num_processes > 1:
            total = self.accelerator.reduce(torch.tensor(flos, device=self.args.device), "sum")
            flos = float(total.item())
        self.state.total_flos += flos
        if run is not None:
            run.current_flos = 0.0
        self.current_flos = 0.0


FlopsSource = tuple[nn.Module, Any, str, "int | None"]
"""A model, its own ``floating_point_ops`` (or ``None``), its main input name, its parameter count."""


def _flops_source(model: nn.Module) -> FlopsSource:
    """What ``floating_point_ops`` needs from ``model``, looked up once (``nn.Module`` attribute misses
    go through ``__getattr__`` and an exception each time)."""
    own = getattr(model, "floating_point_ops", None)
    main_input = getattr(model, "main_input_name", "input_ids")
    if callable(own):
        return (model, own, main_input, None)
    count_parameters = getattr(model, "num_parameters", None)
    count = int(count_parameters(exclude_embeddings=True)) if callable(count_parameters) else None
    return (model, None, main_input, count)
