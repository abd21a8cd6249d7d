"""Iterable training data that saves and restores its own position through ``state_dict()``.

Resuming mid-pass over an iterable dataset otherwise means fast-forwarding: reading, collating and
discarding every batch the checkpoint had consumed (what ``accelerate.skip_first_batches`` does for
data without a sampler). A dataset that can say where it is (``state_dict()`` and
``load_state_dict()``: a ``datasets.IterableDataset``, a torchdata node, your own stream) is put
back there instead, at a cost that does not grow with the position.

Where the dataset is at a checkpoint is not simply ``dataset.state_dict()`` at save time: the
loader reads ahead (accelerate prefetches a batch to detect the end, the engine fetches a whole
window), so the dataset has already produced batches the run has not trained on. The collate
function is therefore wrapped to take a snapshot (a deep copy of ``state_dict()``) as each batch is
formed, keyed by the batch's number within the pass; a save stores the snapshot of the last batch
the run trained on. The contract asked of the dataset is torchdata's: ``state_dict()`` taken right
after a sample was drawn describes the position after that sample, and ``iter()`` after
``load_state_dict()`` continues from there.

Supported: one process, ``dataloader_num_workers=0``. With workers every worker iterates its own
copy of the dataset, which the main process cannot ask for its position; with several processes
each rank would need its own state. In both cases a warning says so when training starts and a
resume fast-forwards as for any iterable dataset. Nothing is stored between passes (a save at an
epoch end, or before the first batch): the next pass starts with a fresh ``iter()`` as in the run
that was not interrupted.

The state goes into the checkpoint as a tensor tree (``extra-train_dataset.json`` +
``.safetensors``: JSON and safetensors, never pickle) through the run's checkpointables.
"""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch.utils.data import IterableDataset

from statetrain.checkpoint.tensor_tree import flatten
from statetrain.data.batches import has_length

if TYPE_CHECKING:
    from statetrain.context.run import Run

logger = logging.getLogger(__name__)

CHECKPOINTABLE_NAME = "train_dataset"
"""Name under which the position is registered (files ``extra-train_dataset.*`` in a checkpoint)."""

_FORMAT = 1


@dataclass(frozen=True)
class Restored:
    """Where ``load_state_dict`` put the dataset: batch ``position`` of the pass; ``exhausted`` when
    that batch was the pass's last (a short batch: the dataset's iterator had already run out, and
    the state it reports then may already be that of the next pass)."""

    position: int
    exhausted: bool


def is_stateful_iterable(dataset: Any) -> bool:
    """An iterable dataset (no ``__len__``, or a torch ``IterableDataset``) with ``state_dict``/``load_state_dict``."""
    if dataset is None:
        return False
    iterable = isinstance(dataset, IterableDataset) or (hasattr(dataset, "__iter__") and not has_length(dataset))
    return iterable and all(callable(getattr(dataset, m, None)) for m in ("state_dict", "load_state_dict"))


class DatasetPosition:
    """The training dataset's position as a checkpointable: snapshots per batch, restore on resume."""

    def __init__(self, run: Run, dataset: Any, recording: bool) -> None:
        self.run = run
        self.dataset = dataset
        self.recording = recording
        self.batches = 0
        """Batches collated so far in the current pass (the number of the next snapshot)."""
        self._snapshots: OrderedDict[int, tuple[bool, Any]] = OrderedDict()
        # the loader runs ahead of training by at most a window and accelerate's one-batch prefetch
        self._keep = 2 * run.plan.gradient_accumulation_steps + 8
        self.batch_size: int | None = None
        self.restored: Restored | None = None
        self.loader: Any = None
        """The loader of the current pass: accelerate's sets ``end_of_dataloader`` before its last batch."""

    # --- recording ----------------------------------------------------------------------------
    def wrap(self, collate_fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def collate(features: Any) -> Any:
            batch = collate_fn(features)
            self.batches += 1
            # a short batch is the pass's last: the loader collates it after the iterator ran out
            short = self.batch_size is not None and len(features) < self.batch_size
            self._snapshots[self.batches] = (short, copy.deepcopy(self.dataset.state_dict()))
            while len(self._snapshots) > self._keep:
                self._snapshots.popitem(last=False)
            return batch

        collate.__wrapped__ = collate_fn  # type: ignore[attr-defined]
        collate._statetrain_dataset_position = True  # type: ignore[attr-defined]
        return collate

    def begin_pass(self, position: int, loader: Any) -> None:
        """A new iterator over ``loader`` starts; its first batch is number ``position + 1``."""
        self.batches = position
        self.loader = loader
        self._snapshots.clear()

    # --- checkpointable -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        engine = self.run.engine
        position = engine.batches_in_epoch
        empty: dict[str, Any] = {"format": _FORMAT, "batches": None}
        if not self.recording or engine.epoch_ended or position == 0:
            return empty
        recorded = self._snapshots.get(position)
        if recorded is None:
            logger.warning(
                "no snapshot of the training dataset's state at batch %d of the pass (have %s); "
                "a resume from this checkpoint fast-forwards the data instead",
                position,
                list(self._snapshots),
            )
            return empty
        short, snapshot = recorded
        # the pass has nothing left: its last batch was short, or the loader already knows it was the last
        exhausted = short or bool(getattr(self.loader, "end_of_dataloader", False))
        if exhausted:  # nothing to load (the state may already be the next pass's), only where the pass stands
            return {"format": _FORMAT, "batches": position, "epoch": engine.epoch_index, "exhausted": True}
        try:
            flatten(snapshot)  # what the checkpoint will do: fail here, naming the dataset
        except TypeError as exc:
            raise TypeError(
                f"the training dataset's state_dict() ({type(self.dataset).__name__}) cannot be saved in a "
                f"checkpoint as {CHECKPOINTABLE_NAME}: {exc}"
            ) from exc
        return {"format": _FORMAT, "batches": position, "epoch": engine.epoch_index, "state": snapshot}

    def load_state_dict(self, tree: dict[str, Any]) -> None:
        if not isinstance(tree, dict) or tree.get("format") != _FORMAT or "batches" not in tree:
            raise ValueError(
                f"the checkpoint's {CHECKPOINTABLE_NAME} state is not in the format this statetrain "
                f"writes: {tree!r:.200}"
            )
        position = tree["batches"]
        engine = self.run.engine
        if position is None or not self.recording or not self.run.resuming:
            return  # nothing stored, restore unsupported here, or ignore_data_skip: start the pass afresh
        if position != engine.batches_in_epoch or tree.get("epoch") != engine.epoch_index or engine.epoch_ended:
            logger.warning(
                "the stored dataset state (batch %s of epoch %s) is not the checkpoint's data position "
                "(batch %d of epoch %d); fast-forwarding instead",
                position,
                tree.get("epoch"),
                engine.batches_in_epoch,
                engine.epoch_index,
            )
            return
        if tree.get("exhausted"):
            self.restored = Restored(position, exhausted=True)
            return
        self.dataset.load_state_dict(tree["state"])
        self.restored = Restored(position, exhausted=False)


def attach_dataset_position(run: Run) -> DatasetPosition | None:
    """Register the training dataset's position with the run when the dataset can save it."""
    loader = run.train_dataloader
    dataset = getattr(loader, "dataset", None)
    if not is_stateful_iterable(dataset):
        return None
    workers = int(getattr(run.args, "dataloader_num_workers", 0) or 0)
    processes = int(getattr(run.accelerator, "num_processes", 1) or 1)
    recording = workers == 0 and processes == 1 and callable(getattr(loader, "collate_fn", None))
    if not recording:
        why = f"dataloader_num_workers={workers}" if workers else f"{processes} processes"
        logger.warning(
            "%s has state_dict()/load_state_dict(), but with %s its position is not saved in checkpoints "
            "(each worker or process iterates its own copy); a resume fast-forwards it by reading and "
            "discarding the consumed batches. Use dataloader_num_workers=0 on one process to restore it.",
            type(dataset).__name__,
            why,
        )
    position = DatasetPosition(run, dataset, recording)
    if recording:
        # accelerate's loader delegates to the DataLoader it wraps (base_dataloader), which collates
        target = getattr(loader, "base_dataloader", loader)
        inner = target.collate_fn
        while getattr(inner, "_statetrain_dataset_position", False):
            inner = inner.__wrapped__  # a loader reused by another train() call: wrap it once
        target.collate_fn = position.wrap(inner)
        position.batch_size = getattr(target, "batch_size", None)
    run.register_checkpointable(CHECKPOINTABLE_NAME, position)
    return position


def restored_position(run: Run) -> Restored | None:
    """Where the dataset was put back by ``load_state_dict`` (reported once); ``None`` when it was not."""
    position = run.checkpointables.get(CHECKPOINTABLE_NAME)
    if not isinstance(position, DatasetPosition) or position.restored is None:
        return None
    restored, position.restored = position.restored, None
    return restored


def begin_pass(run: Run, position: int, loader: Any) -> None:
    """Tell the recorder that a new iterator over ``loader`` starts at batch ``position`` of the pass."""
    recorder = run.checkpointables.get(CHECKPOINTABLE_NAME)
    if isinstance(recorder, DatasetPosition):
        recorder.begin_pass(position, loader)
