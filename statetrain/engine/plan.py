"""How many epochs, windows and optimizer steps a run takes (HF ``set_initial_training_values``)."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

from statetrain.context.run import TrainingPlan
from statetrain.data.batches import has_length


def plan_training(
    args: Any,
    dataloader: Any,
    train_batch_size: int,
    num_examples: Callable[[Any], int],
) -> TrainingPlan:
    """``max_steps`` wins over epochs; data without a length needs ``max_steps``.

    Without a loader (a machine that reads no training data, e.g. evaluation only) there are no
    epochs, and ``max_steps`` is whatever the arguments say (0 when unset).
    """
    accumulation = args.gradient_accumulation_steps
    total_batch = train_batch_size * accumulation * args.world_size
    if dataloader is None:
        return TrainingPlan(
            num_train_epochs=0,
            num_update_steps_per_epoch=0,
            steps_in_epoch=0,
            max_steps=max(int(args.max_steps), 0),
            num_examples=0,
            num_train_samples=0,
            total_train_batch_size=total_batch,
            gradient_accumulation_steps=accumulation,
        )
    length = len(dataloader) if has_length(dataloader) else None
    max_steps = args.max_steps
    if length is not None:
        steps_per_epoch = max(length // accumulation + int(length % accumulation > 0), 1)
        if max_steps < 0:
            max_steps = math.ceil(args.num_train_epochs * steps_per_epoch)
    if length:
        examples = num_examples(dataloader)
        if args.max_steps > 0:
            epochs = max_steps // steps_per_epoch + int(max_steps % steps_per_epoch > 0)
            samples: float = max_steps * total_batch
        else:
            epochs = math.ceil(args.num_train_epochs)
            samples = examples * args.num_train_epochs
    elif args.max_steps > 0:
        epochs = sys.maxsize
        steps_per_epoch = max_steps
        examples = total_batch * args.max_steps
        samples = args.max_steps * total_batch
    else:
        raise ValueError(
            f"max_steps must be a positive number when the training data has no length "
            f"(an IterableDataset); got max_steps={args.max_steps}"
        )
    steps_in_epoch = length if length is not None else max_steps * accumulation
    return TrainingPlan(
        num_train_epochs=int(epochs),
        num_update_steps_per_epoch=steps_per_epoch,
        steps_in_epoch=steps_in_epoch,
        max_steps=int(max_steps),
        num_examples=int(examples),
        num_train_samples=samples,
        total_train_batch_size=total_batch,
        gradient_accumulation_steps=accumulation,
    )
