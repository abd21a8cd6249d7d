"""The default collator HF picks: padding with the tokenizer when the processing class is one.

statetrain does not depend on transformers, so a tokenizer (or sequence feature extractor) is
recognised by what HF's padding collator uses: a ``pad`` method and ``model_input_names``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from statetrain.data.batches import default_data_collator

__all__ = ["DataCollatorWithPadding", "default_collator_for", "is_padding_processor"]

_FAST_TOKENIZER_PAD_WARNING = "Asking-to-pad-a-fast-tokenizer"


def is_padding_processor(processing_class: Any) -> bool:
    """A tokenizer or sequence feature extractor: it pads a list of features itself.

    Multimodal processors are left out, as in HF, even when they have ``pad``: which of their
    parts pads which input is theirs to decide in a collator of their own.
    """
    if processing_class is None or not callable(getattr(processing_class, "pad", None)):
        return False
    if not hasattr(processing_class, "model_input_names"):
        return False
    return not any(cls.__name__ == "ProcessorMixin" for cls in type(processing_class).__mro__)


@dataclass
class DataCollatorWithPadding:
    """Pad features to the longest in the batch with ``tokenizer.pad`` (HF ``DataCollatorWithPadding``).

    ``label``/``label_ids`` are renamed ``labels``, which is what the models take.
    """

    tokenizer: Any
    padding: bool | str = True
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        batch = self._pad(features)
        if "label" in batch:
            batch["labels"] = batch["label"]
            del batch["label"]
        if "label_ids" in batch:
            batch["labels"] = batch["label_ids"]
            del batch["label_ids"]
        return batch

    def _pad(self, features: list[dict[str, Any]]) -> Any:
        """``tokenizer.pad`` without the fast tokenizer's advice to pad in ``__call__`` (HF silences it too)."""
        warned = getattr(self.tokenizer, "deprecation_warnings", None)
        already = warned.get(_FAST_TOKENIZER_PAD_WARNING, False) if isinstance(warned, dict) else None
        if isinstance(warned, dict):
            warned[_FAST_TOKENIZER_PAD_WARNING] = True
        try:
            return self.tokenizer.pad(
                features,
                padding=self.padding,
                max_length=self.max_length,
                pad_to_multiple_of=self.pad_to_multiple_of,
                return_tensors=self.return_tensors,
            )
        finally:
            if isinstance(warned, dict):
                warned[_FAST_TOKENIZER_PAD_WARNING] = already


def default_collator_for(processing_class: Any) -> Callable[[list[Any]], Any]:
    """HF's rule: a padding collator for a tokenizer/feature extractor, else the stacking collator."""
    if is_padding_processor(processing_class):
        return DataCollatorWithPadding(processing_class)
    return default_data_collator
