"""``auto_find_batch_size``: on out-of-memory, shrink the batch by x0.9 and train again from the start.

HF (accelerate's ``find_executable_batch_size``) retries with the model as the failed attempt left
it and the optimizer it had built, moments included; only the schedule is new. Here each retry
starts from the point ``train()`` started from: the weights, the optimizer (a prebuilt one gets
its state back, one the Trainer built is built again), the schedule and the random generators.
No gradient or step of the failed attempt leaks into the next, so a run that had to shrink ends
with the parameters of a run started at the batch size it found.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from statetrain.checkpoint.rng import capture_rng_state, restore_rng_state
from statetrain.context.state import TRAINER_STATE_NAME, TrainerState

if TYPE_CHECKING:
    from statetrain.trainer.trainer import Trainer

__all__ = [
    "SHRINK_FACTOR",
    "StartingPoint",
    "resume_batch_size",
    "run_with_batch_size_search",
    "should_reduce_batch_size",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

SHRINK_FACTOR = 0.9

# accelerate's ``should_reduce_batch_size`` messages: CUDA/HIP/XPU, MPS, cuDNN, CPU and HPU.
_OUT_OF_MEMORY_MESSAGES = (
    " out of memory.",
    "MPS backend out of memory",
    "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED.",
    "DefaultCPUAllocator: can't allocate memory",
    "FATAL ERROR :: MODULE:PT_DEVMEM Allocation failed",
)


def should_reduce_batch_size(exception: BaseException) -> bool:
    """Whether a smaller batch could avoid ``exception``: torch's OOM error, or a RuntimeError saying so.

    Devices other than CUDA report running out of memory only in a RuntimeError's message, so the
    messages accelerate recognises are matched too.
    """
    if isinstance(exception, torch.OutOfMemoryError):
        return True
    if isinstance(exception, RuntimeError) and len(exception.args) == 1 and isinstance(exception.args[0], str):
        return any(message in exception.args[0] for message in _OUT_OF_MEMORY_MESSAGES)
    return False


def _cpu_copy(tree: Any) -> Any:
    """A copy of a state dict whose tensors live on the CPU, so the snapshot takes no device memory."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().to("cpu", copy=True)
    if isinstance(tree, dict):
        return {key: _cpu_copy(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_cpu_copy(value) for value in tree)
    return tree


def _unwrapped(optimizer: Any) -> Any:
    from accelerate.optimizer import AcceleratedOptimizer

    return optimizer.optimizer if isinstance(optimizer, AcceleratedOptimizer) else optimizer


@dataclass
class StartingPoint:
    """What ``train()`` starts from, kept (on the CPU) so a retry can start from it again."""

    weights: dict[str, torch.Tensor]
    optimizer: Any
    optimizer_state: dict[str, Any] | None
    lr_scheduler: Any
    lr_scheduler_state: dict[str, Any] | None
    rng: dict[str, Any]

    @classmethod
    def capture(cls, trainer: Trainer) -> StartingPoint:
        optimizer = _unwrapped(trainer.optimizer) if trainer.optimizer is not None else None
        scheduler = trainer.lr_scheduler
        return cls(
            weights=_cpu_copy(trainer.model.state_dict()),
            optimizer=optimizer,
            optimizer_state=_cpu_copy(optimizer.state_dict()) if optimizer is not None else None,
            lr_scheduler=scheduler,
            lr_scheduler_state=_cpu_copy(scheduler.state_dict()) if scheduler is not None else None,
            rng=capture_rng_state(),
        )

    def restore(self, trainer: Trainer) -> None:
        """Put the trainer back where ``train()`` started, dropping what the failed attempt built."""
        trainer._run = None  # type: ignore[assignment]
        trainer.model_wrapped = trainer.model
        trainer.accelerator.free_memory()
        trainer.model.zero_grad(set_to_none=True)
        trainer.model.load_state_dict(self.weights)
        if self.optimizer is None:
            trainer.optimizer = None
        else:
            self.optimizer.load_state_dict(self.optimizer_state)
            trainer.optimizer = self.optimizer
        if self.lr_scheduler is None:
            trainer.lr_scheduler = None
            trainer._created_lr_scheduler = False
        else:
            self.lr_scheduler.load_state_dict(self.lr_scheduler_state)
            trainer.lr_scheduler = self.lr_scheduler
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        restore_rng_state(self.rng)


def run_with_batch_size_search(trainer: Trainer, attempt: Callable[[], T]) -> T:
    """Run ``attempt`` (one training run at ``trainer._train_batch_size``), shrinking on out-of-memory.

    Without ``auto_find_batch_size`` this is just ``attempt()``. The batch size found stays on the
    trainer (a later ``train()`` starts from it, as in HF) and in ``TrainerState.train_batch_size``.
    """
    if not trainer.args.auto_find_batch_size:
        return attempt()
    start = StartingPoint.capture(trainer)
    while True:
        failed_at: int | None = None
        try:
            return attempt()
        except Exception as exc:
            if not should_reduce_batch_size(exc):
                raise
            failed_at = trainer._train_batch_size
            smaller = int(failed_at * SHRINK_FACTOR)
            if smaller == 0:
                raise RuntimeError(
                    "auto_find_batch_size: training ran out of memory even with a train batch size of "
                    f"{failed_at}; no executable batch size is left"
                ) from exc
            step = trainer.state.global_step
        # Outside the except block, so the failed attempt's frames (and tensors) can be freed first.
        logger.warning(
            "auto_find_batch_size: out of memory at train batch size %d (global step %d); restarting "
            "training from its starting point with batch size %d",
            failed_at,
            step,
            smaller,
        )
        start.restore(trainer)
        trainer._train_batch_size = smaller


def resume_batch_size(trainer: Trainer, checkpoint: Path | str) -> None:
    """On resume with ``auto_find_batch_size``, continue at the batch size the checkpointed run found (HF)."""
    if not trainer.args.auto_find_batch_size:
        return
    state_file = Path(checkpoint) / TRAINER_STATE_NAME
    if not state_file.is_file():
        return
    found = TrainerState.load_from_json(state_file).train_batch_size
    if found is not None:
        trainer._train_batch_size = found
