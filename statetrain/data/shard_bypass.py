"""Iterate accelerate's ``DataLoaderShard`` without its per-batch work when that work does nothing.

In one process with the batches already where the Trainer moves them, the shard's per-batch work
(``send_to_device``, the stateful-loader bookkeeping, the skip counter) changes nothing, yet costs a
few microseconds a batch. :func:`shard_is_plain` says when that holds; :func:`iterate_shard` then
does once per pass what the shard does once per pass (RNG synchronisation, registration with the
gradient state, ``set_epoch``, the end-of-data flag, the iteration count) and walks the wrapped
loader one batch ahead, exactly as the shard does, so a collator or dataset that draws random
numbers draws them in the same order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch


def shard_is_plain(loader: Any, accelerator: Any) -> bool:
    """Whether ``loader`` is a bare ``DataLoaderShard`` whose per-batch work is a no-op for ``accelerator``."""
    from accelerate.data_loader import DataLoaderShard

    device = accelerator.device
    if type(loader) is not DataLoaderShard or accelerator.num_processes != 1:
        return False
    if getattr(loader, "use_stateful_dataloader", False) or getattr(loader, "skip_batches", 0):
        return False
    if hasattr(loader.base_dataloader, "state_dict"):  # the shard snapshots it after every batch
        return False
    target = loader.device
    # a batch the shard would move is moved by the Trainer's input preparation to the same device
    return target is None or (torch.device(target) == torch.device(device) and not loader._non_blocking)


def iterate_shard(loader: Any) -> Iterator[Any]:
    """The batches ``iter(loader)`` yields, with the shard's once-per-pass work and none per batch."""
    from accelerate.utils import synchronize_rng_states

    if loader.rng_types is not None:
        synchronize_rng_states(loader.rng_types, loader.synchronized_generator)
    loader.begin()
    loader.set_epoch(loader.iteration)
    batches = iter(loader.base_dataloader)
    try:
        current = next(batches)
    except StopIteration:
        loader.end()
        return
    for following in batches:  # one batch ahead, as the shard reads
        yield current
        current = following
    loader.end_of_dataloader = True
    yield current
    loader.iteration += 1
    loader.end()
