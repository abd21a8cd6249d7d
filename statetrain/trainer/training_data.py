"""The Trainer's training data: HF's sampler, seeding, collation and unused-column removal.

Overridable as in HF (``get_train_dataloader``, ``_get_train_sampler``, ``num_examples``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from statetrain.data.batches import RemoveColumnsCollator, remove_unused_dataset_columns, seed_worker, signature_columns
from statetrain.data.loader_options import loader_options
from statetrain.data.samplers import build_train_sampler

if TYPE_CHECKING:
    from torch import nn


class TrainingDataMixin:
    """Builds the training loader, mixed into the Trainer."""

    if TYPE_CHECKING:  # what the Trainer provides
        args: Any
        accelerator: Any
        model: nn.Module
        train_dataset: Any
        processing_class: Any
        data_collator: Any
        label_names: list[str]
        _signature_columns: list[str] | None
        _train_batch_size: int

    def _get_signature_columns(self) -> list[str]:
        if self._signature_columns is None:
            self._signature_columns = signature_columns(self.model, self.label_names)
        return self._signature_columns

    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler[int] | None:
        dataset = self.train_dataset if train_dataset is None else train_dataset
        return build_train_sampler(dataset, self.args, self.processing_class, original=self.train_dataset)

    def get_train_dataloader(self) -> DataLoader[Any]:
        """The prepared training loader: HF's sampler and seeding, so batches match HF's."""
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        dataset, collator = self._apply_column_removal(self.train_dataset, "training")
        params: dict[str, Any] = {
            "batch_size": self._train_batch_size,
            "collate_fn": collator,
            **loader_options(self.args),
        }
        if not isinstance(dataset, IterableDataset):
            params["sampler"] = self._get_train_sampler(dataset)
            params["drop_last"] = self.args.dataloader_drop_last
            params["worker_init_fn"] = functools.partial(
                seed_worker, num_workers=self.args.dataloader_num_workers, rank=self.args.process_index
            )
        return self.accelerator.prepare(DataLoader(dataset, **params))

    def _apply_column_removal(self, dataset: Any, description: str) -> tuple[Any, Callable[..., Any]]:
        collator = self.data_collator
        if not self.args.remove_unused_columns:
            return dataset, collator
        columns = self._get_signature_columns()
        if hasattr(dataset, "column_names") and hasattr(dataset, "remove_columns"):
            return remove_unused_dataset_columns(dataset, columns, type(self.model).__name__), collator
        return dataset, RemoveColumnsCollator(collator, columns, type(self.model).__name__, description)

    def num_examples(self, dataloader: DataLoader[Any]) -> int:
        try:
            return len(dataloader.dataset)  # type: ignore[arg-type]
        except (TypeError, AttributeError, NameError):
            return len(dataloader) * self.args.per_device_train_batch_size
