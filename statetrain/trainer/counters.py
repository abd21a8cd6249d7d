"""Throughput counters kept in ``TrainerState``: input tokens seen (HF ``_track_num_input_tokens``).

``total_flos`` needs no helper here: the Trainer's ``floating_point_ops`` gives each micro-batch's
count and ``store_flos`` sums it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from statetrain.events.hf_loggers import hf_facing_logger

if TYPE_CHECKING:
    from statetrain.context.run import Run

logger = logging.getLogger(__name__)


def track_num_input_tokens(trainer: Any, run: Run, inputs: Any) -> None:
    """Add one micro-batch's input tokens to ``state.num_input_tokens_seen`` (HF's rules).

    ``"all"`` counts every element of the model's main input, ``"non_padding"`` the attention
    mask's ones (or the tokens that are not the tokenizer's pad token), summed over processes.
    The first count of a run records where the run started, for ``train_tokens_per_second``.
    """
    mode = trainer.args.include_num_input_tokens_seen
    if mode == "no":
        return
    state = run.state
    if trainer._tokens_seen_run is not run:
        trainer._tokens_seen_run = run
        trainer._initial_num_input_tokens_seen = state.num_input_tokens_seen
    main_input = getattr(trainer.model, "main_input_name", "input_ids")
    if not isinstance(inputs, Mapping) or main_input not in inputs:
        _warn_once(
            trainer,
            f"include_num_input_tokens_seen is set but the batch has no {main_input!r} (the model's "
            "main_input_name); no tokens are counted. Give the model a `main_input_name` attribute.",
        )
        return
    tokens: Any
    if mode == "non_padding":
        pad_id = getattr(trainer.processing_class, "pad_token_id", None)
        if "attention_mask" in inputs:
            tokens = inputs["attention_mask"].sum()
        elif pad_id is not None:
            tokens = (inputs[main_input] != pad_id).sum()
        else:
            _warn_once(
                trainer,
                "Could not determine method to count non-padding tokens, falling back to counting all tokens. "
                "(include_num_input_tokens_seen='non_padding' needs an attention_mask in the batch or a "
                "processing_class with a pad_token_id.)",
            )
            tokens = inputs[main_input].numel()
    else:
        tokens = inputs[main_input].numel()
    if trainer.accelerator.num_processes > 1:
        tokens = trainer.accelerator.gather(torch.as_tensor(tokens, device=trainer.args.device, dtype=torch.int64))
        tokens = tokens.sum()
    state.num_input_tokens_seen += int(tokens.item() if torch.is_tensor(tokens) else tokens)


def _warn_once(trainer: Any, message: str) -> None:
    """HF warns on every micro-batch; once per trainer says the same without flooding the log."""
    if message not in trainer._token_count_warnings:
        trainer._token_count_warnings.add(message)
        hf_facing_logger(logger).warning(message)
