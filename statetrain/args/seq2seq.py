"""``Seq2SeqTrainingArguments``: HF's arguments for sequence-to-sequence models, generation included."""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Any

from pydantic import ConfigDict
from pydantic.dataclasses import dataclass

from statetrain.args.training_args import TrainingArguments
from statetrain.args.types import help_text


@dataclass(config=ConfigDict(extra="forbid", arbitrary_types_allowed=True))
class Seq2SeqTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus how evaluation and prediction generate (transformers 5.24's fields)."""

    sortish_sampler: bool = field(default=False, metadata=help_text("Accepted for compatibility; has no effect."))
    predict_with_generate: bool = field(
        default=False, metadata=help_text("Evaluate and predict with generate() (for ROUGE, BLEU...).")
    )
    generation_max_length: int | None = field(
        default=None, metadata=help_text("max_length for generate() during evaluation and prediction.")
    )
    generation_num_beams: int | None = field(
        default=None, metadata=help_text("num_beams for generate() during evaluation and prediction.")
    )
    generation_config: str | Path | Any | None = field(
        default=None, metadata=help_text("A GenerationConfig, or a path/model id of one, for evaluation.")
    )

    def to_dict(self) -> dict[str, Any]:
        """As ``TrainingArguments.to_dict``, with a ``GenerationConfig`` as its dict and a path as text."""
        plain = super().to_dict()
        value: Any = plain.get("generation_config")
        if value is not None and hasattr(value, "to_dict"):
            plain["generation_config"] = value.to_dict()
        elif isinstance(value, Path):
            plain["generation_config"] = str(value)
        return plain
