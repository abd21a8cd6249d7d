"""Training samplers by ``train_sampling_strategy``: random, sequential, and HF's length grouping.

Length grouping puts examples of similar length in the same batch, so padding wastes less compute,
while keeping the order random between groups; the longest batch comes first so that an
out-of-memory error shows up at the first step rather than hours in.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import IterableDataset, RandomSampler, Sampler, SequentialSampler

from statetrain.data.batches import has_length

__all__ = ["LengthGroupedSampler", "build_train_sampler", "get_length_grouped_indices", "length_grouped_sampler"]

logger = logging.getLogger(__name__)

MEGABATCH_MULT_MAX = 50


def get_length_grouped_indices(
    lengths: Sequence[int],
    batch_size: int,
    mega_batch_mult: int | None = None,
    generator: torch.Generator | None = None,
) -> list[int]:
    """A random permutation, cut in megabatches, each sorted by decreasing length (HF's algorithm).

    A megabatch holds ``mega_batch_mult * batch_size`` indices; by default 50 batches, or fewer so
    that there are at least 4 megabatches. The megabatch holding the longest example swaps its first
    index with the first megabatch's, so the very first batch is the longest.
    """
    if mega_batch_mult is None:
        mega_batch_mult = max(min(len(lengths) // (batch_size * 4), MEGABATCH_MULT_MAX), 1)
    # torch's generator, not Python's: a distributed sampler seeds torch.
    indices = torch.randperm(len(lengths), generator=generator)
    size = mega_batch_mult * batch_size
    megabatches = [
        sorted(indices[i : i + size].tolist(), key=lambda index: lengths[index], reverse=True)
        for i in range(0, len(lengths), size)
    ]
    longest = int(torch.argmax(torch.tensor([lengths[megabatch[0]] for megabatch in megabatches])).item())
    megabatches[0][0], megabatches[longest][0] = megabatches[longest][0], megabatches[0][0]
    return [index for megabatch in megabatches for index in megabatch]


class LengthGroupedSampler(Sampler[int]):
    """Indices grouped by similar length with some randomness (HF ``LengthGroupedSampler``).

    Without a ``generator`` the permutation draws from torch's global generator, as HF's does, so
    the order follows ``seed`` and is restored with the RNG state on resume.
    """

    def __init__(
        self,
        batch_size: int,
        dataset: Any = None,
        lengths: Sequence[int] | torch.Tensor | None = None,
        model_input_name: str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if dataset is None and lengths is None:
            raise ValueError("LengthGroupedSampler needs the dataset or the lengths of its examples")
        self.batch_size = batch_size
        if lengths is None:
            lengths = lengths_from_rows(dataset, model_input_name or "input_ids")
        elif isinstance(lengths, torch.Tensor):
            lengths = lengths.tolist()
        self.lengths: list[int] = [int(length) for length in lengths]
        self.generator = generator

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=self.generator))


def lengths_from_rows(dataset: Any, model_input_name: str) -> list[int]:
    """The length of each example's ``model_input_name`` (reads the whole dataset once)."""
    first = dataset[0]
    if not isinstance(first, Mapping) or model_input_name not in first:
        raise ValueError(
            "train_sampling_strategy='group_by_length' needs the length of each example: give the dataset "
            f"a length column (TrainingArguments.length_column_name) or examples that are dicts with a "
            f"{model_input_name!r} key"
        )
    return [len(row[model_input_name]) for row in dataset]


def _column(dataset: Any, name: str) -> list[int] | None:
    names = getattr(dataset, "column_names", None)
    if not isinstance(names, (list, tuple)) or name not in names:
        return None
    return list(dataset[name])


def length_grouped_sampler(
    dataset: Any, args: Any, processing_class: Any, original: Any = None
) -> LengthGroupedSampler:
    """HF's sampler for ``group_by_length``, grouping by the optimizer step's examples.

    Lengths come from the ``length_column_name`` column when the dataset has one. HF drops that
    column with the unused ones before reading it and measures every example instead; the column is
    read here from the dataset as given (``original``) when the removal took it away.
    """
    lengths = _column(dataset, args.length_column_name)
    if lengths is None and original is not None and original is not dataset and has_length(original):
        lengths = _column(original, args.length_column_name)
        if lengths is not None and len(lengths) != len(dataset):
            lengths = None
    names = getattr(processing_class, "model_input_names", None) if processing_class is not None else None
    return LengthGroupedSampler(
        args.train_batch_size * args.gradient_accumulation_steps,
        dataset=dataset,
        lengths=lengths,
        model_input_name=names[0] if names else None,
    )


def build_train_sampler(
    dataset: Any, args: Any, processing_class: Any = None, original: Any = None
) -> Sampler[int] | None:
    """The training sampler ``train_sampling_strategy`` names; none for data without a length."""
    strategy = str(getattr(args.train_sampling_strategy, "value", args.train_sampling_strategy))
    if dataset is None or isinstance(dataset, IterableDataset) or not has_length(dataset):
        if dataset is not None and strategy == "group_by_length":
            logger.warning(
                "train_sampling_strategy='group_by_length' is ignored: the training dataset has no length "
                "(an IterableDataset), so examples come in the dataset's own order"
            )
        return None
    if strategy == "sequential":
        return SequentialSampler(dataset)
    if strategy == "group_by_length":
        return length_grouped_sampler(dataset, args, processing_class, original)
    return RandomSampler(dataset)
