"""Checks on the training rows before the first step, so that a wrong dataset fails by name.

Without them a dataset of raw strings, rows without the model's inputs, string labels or an empty
dataset fail deep inside torch (``vars() argument must have __dict__ attribute``, ``'NoneType'
object has no attribute 'size'``, ``num_samples should be a positive integer value``), after the
model and optimizer were built. Only the first row of a map-style dataset is read (an
``IterableDataset`` is never consumed for a check), and the inputs and labels are checked only
with ``default_data_collator``: another collator (padding, or the user's own) may build them.
Rows are refused for inputs only when they hold none of the model's required ones (a custom
machine's step state may add some, as the multi-task example adds ``task``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn
from torch.utils.data import IterableDataset

_LABEL_COLUMNS = ("label", "labels", "label_ids")


def check_train_rows(dataset: Any, model: nn.Module, label_names: list[str], default_collator: bool) -> None:
    """Raise ``ValueError`` naming the problem and the column when ``dataset`` cannot train ``model``."""
    if isinstance(dataset, IterableDataset):
        return
    try:
        length = len(dataset)
    except TypeError:
        return
    if length == 0:
        raise ValueError(
            "train_dataset is empty (0 rows): there is nothing to train on; check how it was built or filtered"
        )
    row = dataset[0]
    if isinstance(row, (str, bytes)):
        raise ValueError(
            f"train_dataset row 0 is a {type(row).__name__} ({row[:40]!r}), not a dict of model inputs: "
            "encode the text first (e.g. tokenize it into input_ids) or pass a data_collator that does"
        )
    if not default_collator or not isinstance(row, Mapping):
        return
    for column in (*_LABEL_COLUMNS, *label_names):
        value = row.get(column)
        if isinstance(value, (str, bytes)):
            raise ValueError(
                f"train_dataset column {column!r} holds strings (row 0: {value!r}); labels must be numbers: "
                "map each label to a class id first (e.g. with a label2id dict)"
            )
    required = required_inputs(model)
    missing = [name for name in required if name not in row]
    if missing and len(missing) == len(required):  # a state of a custom machine may add some inputs, not all
        raise ValueError(
            f"train_dataset rows lack the model's input column(s) {missing}: {type(model).__name__}.forward "
            f"requires them, and row 0 has only {sorted(map(str, row))}; rename or compute those columns first"
        )


def required_inputs(model: nn.Module) -> list[str]:
    """The arguments ``model.forward`` cannot do without (no default, not ``*args``/``**kwargs``)."""
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in parameters
        if p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
