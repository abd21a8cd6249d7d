"""epoch: begin an epoch: announce it, then position the data iterator for it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from accelerate import skip_first_batches

from statetrain.checkpoint.dataset_position import attach_dataset_position, begin_pass, restored_position
from statetrain.checkpoint.rng import restore_rng_state
from statetrain.data.shard_bypass import iterate_shard
from statetrain.events.event import Event
from statetrain.states.base import State

if TYPE_CHECKING:
    from statetrain.context.run import Run


def set_loader_epoch(dataloader: Any, epoch: int) -> None:
    """Reseed the sampler for ``epoch`` (accelerate's loader does not reach a wrapped batch sampler)."""
    if hasattr(dataloader, "set_epoch"):
        dataloader.set_epoch(epoch)
    inner = getattr(getattr(dataloader, "batch_sampler", None), "batch_sampler", None)
    if inner is not None and hasattr(inner, "set_epoch"):
        inner.set_epoch(epoch)


class EpochState(State):
    """Moves the context to the next epoch (or the first), fires ``on_epoch_begin``, builds the iterator."""

    name = "epoch"
    needs_train_data = True
    reads = ("engine.epoch_ended", "engine.batches_in_epoch", "train_dataloader")
    writes = ("starting", "engine.epoch_index", "epoch_iterator", "update_step", "grad_norm", "learning_rate")
    fires = (Event.ON_EPOCH_BEGIN,)

    def setup(self, run: Run) -> None:
        attach_dataset_position(run)  # an iterable dataset with state_dict() travels with checkpoints

    def run(self, run: Run) -> None:
        engine = run.engine
        run.starting = False
        if engine.epoch_ended:
            engine.epoch_index += 1
            engine.epoch_ended = False
            engine.batches_in_epoch = 0
        run.grad_norm = None
        run.learning_rate = None
        run.fire(Event.ON_EPOCH_BEGIN)
        loader = run.train_dataloader
        skip = engine.batches_in_epoch if run.resuming else 0
        # an iterable dataset with state_dict() was put back at the position by load_state_dict
        restored = restored_position(run) if skip else None
        if skip and restored is None:
            # sampler-level skip: the consumed indices are passed over, their batches never loaded
            # (iterable data without a sampler is read and discarded, firing no event)
            loader = skip_first_batches(loader, skip)
        set_loader_epoch(loader, engine.epoch_index)
        if run.pending_rng is not None and not skip:
            restore_rng_state(run.pending_rng)  # before the iterator draws its seed, as the first run did
            run.pending_rng = None
        run.resuming = False
        begin_pass(run, skip if restored else 0, loader)
        if restored and restored.exhausted:
            run.epoch_iterator = iter(())
        elif run.plain_loader and loader is run.train_dataloader:
            run.epoch_iterator = iterate_shard(loader)  # the same batches, without per-batch no-ops
        else:
            run.epoch_iterator = iter(loader)
        run.update_step = engine.batches_in_epoch // run.plan.gradient_accumulation_steps
        run.epoch_had_batches = engine.batches_in_epoch > 0
