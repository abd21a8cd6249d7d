"""What a state may ask of the object that assembled the run: ``run.trainer``, typed as a protocol.

States live below the ``Trainer`` and never import it; they reach the model-specific work (the
training step, evaluation, checkpoint writing, logging) through these hooks. The ``Trainer``
implements them; a custom state may rely on exactly this surface. The ``_``-prefixed hooks are
overridable like HF's own ``_``-prefixed methods (``_save_checkpoint``, ``_prepare_inputs``), but
are not part of the HF public surface.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch
    from torch import nn

    from statetrain.context.memory import MemoryTracker
    from statetrain.context.run import Run
    from statetrain.context.state import TrainerControl


class TrainerHooks(Protocol):
    """The trainer as the states see it."""

    args: Any
    model: Any
    control: TrainerControl
    bus: Any
    accelerator: Any
    callback_refs: dict[str, Any]
    train_dataset: Any
    eval_dataset: Any
    data_collator: Callable[..., Any]
    nan_inf_guard: Any
    current_gradient_accumulation_steps: int
    _window_weights: Any  # the window's loss weights (get_batch_samples), or None
    _train_batch_size: int
    _memory_tracker: MemoryTracker

    @property
    def _scheduler_steps_on_metrics(self) -> bool: ...

    # --- one micro-batch and one update -----------------------------------------------------------
    def get_batch_samples(
        self, epoch_iterator: Iterator[Any], num_batches: int, device: Any
    ) -> tuple[list[Any], Any]: ...

    def _run_training_step(self, model: nn.Module, inputs: Any, num_items_in_batch: Any) -> torch.Tensor: ...

    def _track_num_input_tokens(self, run: Run, inputs: Any) -> None: ...

    def floating_point_ops(self, inputs: Any) -> float: ...

    def _clip_grad_norm(self, model: nn.Module, max_norm: float) -> torch.Tensor: ...

    def _get_learning_rate(self) -> float: ...

    def _step_scheduler_on_metrics(self, metrics: dict[str, float]) -> None: ...

    # --- logging, evaluation, checkpoints --------------------------------------------------------
    def _mean_across_processes(self, value: torch.Tensor) -> torch.Tensor: ...

    def store_flos(self, run: Run | None = None) -> None: ...

    def log(self, logs: dict[str, Any], start_time: float | None = None) -> None: ...

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]: ...

    def _evaluate(
        self, trial: Any = None, ignore_keys_for_eval: list[str] | None = None, skip_scheduler: bool = False
    ) -> dict[str, float]: ...

    def _determine_best_metric(self, metrics: dict[str, float]) -> bool: ...

    def _snapshot_stateful_callbacks(self) -> None: ...

    def _save_checkpoint(self, run: Run) -> Path | None: ...

    def _finish_checkpoints(self) -> None: ...

    # --- data, for states that build their own batches --------------------------------------------
    def get_train_dataloader(self) -> Any: ...

    def _apply_column_removal(self, dataset: Any, description: str) -> tuple[Any, Callable[..., Any]]: ...

    def _prepare_inputs(self, inputs: Any) -> Any: ...

    def compute_loss(
        self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any: ...
