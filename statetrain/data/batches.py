"""Batches as HF builds them: the default collator, unused-column removal, worker seeding."""

from __future__ import annotations

import inspect
import logging
import os
import random
from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)


def default_data_collator(features: Sequence[Any]) -> dict[str, Any]:
    """Stack a list of feature dicts into tensors; ``label``/``label_ids`` become ``labels`` (HF rules)."""
    if type(features[0]) is not dict and not isinstance(features[0], Mapping):
        features = [vars(f) for f in features]
    first = features[0]
    batch: dict[str, Any] = {}
    if first.get("label") is not None:
        label = first["label"].item() if isinstance(first["label"], torch.Tensor) else first["label"]
        dtype = torch.long if isinstance(label, (int, np.integer)) else torch.float
        batch["labels"] = torch.tensor([f["label"] for f in features], dtype=dtype)
    elif first.get("label_ids") is not None:
        if isinstance(first["label_ids"], torch.Tensor):
            batch["labels"] = torch.stack([f["label_ids"] for f in features])
        else:
            dtype = torch.long if isinstance(first["label_ids"][0], (int, np.integer)) else torch.float
            batch["labels"] = torch.tensor([f["label_ids"] for f in features], dtype=dtype)
    for key, value in first.items():
        if key in ("label", "label_ids") or value is None or isinstance(value, str):
            continue
        if isinstance(value, torch.Tensor):
            batch[key] = torch.stack([f[key] for f in features])
        elif isinstance(value, np.ndarray):
            batch[key] = torch.from_numpy(np.stack([f[key] for f in features]))
        else:
            batch[key] = torch.tensor([f[key] for f in features])
    return batch


def signature_columns(model: Any, label_names: Sequence[str]) -> list[str]:
    """The batch keys ``model.forward`` accepts, plus the label spellings the collator maps."""
    params = list(inspect.signature(model.forward).parameters)
    return params + sorted(set(["label", "label_ids", *label_names]) - set(params))


class RemoveColumnsCollator:
    """Drops feature keys that ``forward`` does not take, before collating (for non-``datasets`` data)."""

    def __init__(
        self,
        data_collator: Callable[[list[Any]], Any],
        columns: Sequence[str],
        model_name: str,
        description: str,
    ) -> None:
        self.data_collator = data_collator
        self.columns = set(columns)
        self.model_name = model_name
        self.description = description
        self._reported = False

    def _strip(self, feature: Any) -> Any:
        if not isinstance(feature, Mapping):
            return feature
        kept = {k: v for k, v in feature.items() if k in self.columns}
        if not self._reported:
            dropped = sorted(set(feature) - self.columns)
            if dropped:
                logger.info(
                    "%s set: columns %s are not arguments of %s.forward and were dropped",
                    self.description,
                    dropped,
                    self.model_name,
                )
            if not kept:
                raise ValueError(
                    f"No column of the {self.description} set matches {self.model_name}.forward "
                    f"(accepts: {sorted(self.columns)}; got: {sorted(feature)}). Rename the columns "
                    "or set remove_unused_columns=False."
                )
            self._reported = True
        return kept

    def __call__(self, features: list[Any]) -> Any:
        columns = self.columns
        # nothing to drop: skip rebuilding every row (plain dicts are checked in one C-level pass)
        if self._reported and (
            (set(map(type, features)) == {dict} and columns.issuperset(chain.from_iterable(features)))
            or all(isinstance(f, Mapping) and f.keys() <= columns for f in features)
        ):
            return self.data_collator(features)
        return self.data_collator([self._strip(f) for f in features])


def remove_unused_dataset_columns(dataset: Any, columns: Sequence[str], model_name: str) -> Any:
    """``datasets.Dataset`` form of the column removal."""
    ignored = [c for c in dataset.column_names if c not in columns]
    if len(ignored) == len(dataset.column_names):
        raise ValueError(
            f"No column of the dataset matches {model_name}.forward (accepts: {sorted(columns)}; "
            f"got: {dataset.column_names}). Rename the columns or set remove_unused_columns=False."
        )
    return dataset.remove_columns(ignored) if ignored else dataset


def seed_worker(worker_id: int, num_workers: int, rank: int) -> None:
    """Give each dataloader worker its own reproducible seed (HF ``seed_worker``)."""
    del worker_id, num_workers, rank
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def has_length(obj: Any) -> bool:
    try:
        return len(obj) is not None
    except (TypeError, NotImplementedError, AttributeError):
        return False


def length_or_none(obj: Any) -> int | None:
    """``len(obj)``, or ``None`` for data without a length (an iterable dataset, no dataset)."""
    return len(obj) if has_length(obj) else None


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices); optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        enable_full_determinism()


# What HF's ``enable_full_determinism`` sets: cuBLAS needs a fixed workspace (or blocking launches,
# depending on the CUDA version) before deterministic mode works; the others do the same for
# Ascend NPUs and flash attention.
DETERMINISM_ENV = {
    "CUDA_LAUNCH_BLOCKING": "1",
    "CUBLAS_WORKSPACE_CONFIG": ":16:8",
    "ASCEND_LAUNCH_BLOCKING": "1",
    "HCCL_DETERMINISTIC": "1",
    "FLASH_ATTENTION_DETERMINISTIC": "1",
}


def enable_full_determinism(warn_only: bool = False) -> None:
    """Deterministic kernels everywhere (``full_determinism``), as HF: slower, but bit-reproducible."""
    os.environ.update(DETERMINISM_ENV)
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
