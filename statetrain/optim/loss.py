"""Loss pieces the Trainer composes: HF's label smoother, label-item counting, the NaN/Inf policies.

Kept apart from the trainer so that each rule (what counts as an item, how a smoothed loss is
normalised, what a non-finite loss does to the step) has one definition the tests can pin down.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

IGNORE_INDEX = -100


class NonFiniteLossError(FloatingPointError):
    """``nan_inf_policy="raise"``: a micro-batch produced a NaN or infinite training loss."""


@dataclass
class LabelSmoother:
    """HF's ``LabelSmoother``: ``(1 - epsilon) * nll + epsilon * mean over classes of -log p``.

    Positions labelled ``ignore_index`` contribute nothing. Both terms are divided by
    ``num_items_in_batch`` when the Trainer counted the whole accumulation window, so the window
    sums to one mean; otherwise by this micro-batch's own non-ignored labels.
    """

    epsilon: float = 0.1
    ignore_index: int = IGNORE_INDEX

    def __call__(
        self,
        model_output: Any,
        labels: torch.Tensor,
        shift_labels: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        logits = model_output["logits"] if isinstance(model_output, Mapping) else model_output[0]
        if shift_labels:
            # a causal LM predicts token t+1 at position t
            logits = logits[..., :-1, :].contiguous()
            labels = labels[..., 1:].contiguous()
        neg_log_probs = -nn.functional.log_softmax(logits, dim=-1)
        if labels.dim() == neg_log_probs.dim() - 1:
            labels = labels.unsqueeze(-1)
        padding = labels.eq(self.ignore_index)
        # gather cannot index -100; those positions are masked out right after
        nll = neg_log_probs.gather(dim=-1, index=torch.clamp(labels, min=0))
        # summed in float32 so that half-precision logits do not lose the smoothing term
        smoothed = neg_log_probs.sum(dim=-1, keepdim=True, dtype=torch.float32)
        nll = nll.masked_fill(padding, 0.0)
        smoothed = smoothed.masked_fill(padding, 0.0)
        denominator: Any
        if num_items_in_batch is None:
            denominator = padding.numel() - padding.long().sum()
        elif torch.is_tensor(num_items_in_batch):
            denominator = num_items_in_batch.to(nll.device)
        else:
            denominator = num_items_in_batch
        nll_loss = nll.sum() / denominator
        smoothed_loss = smoothed.sum() / (denominator * neg_log_probs.shape[-1])
        return (1 - self.epsilon) * nll_loss + self.epsilon * smoothed_loss


def is_causal_lm(model: nn.Module) -> bool:
    """Whether HF's label smoother shifts labels for ``model``: its class is a registered causal LM.

    Without transformers installed no model can be one of its causal LMs.
    """
    if "transformers" not in sys.modules:
        return False  # a model of a transformers class means transformers is imported already
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    except ImportError:  # pragma: no cover - transformers is a test dependency
        return False
    get_name = getattr(model, "_get_name", None)
    name = get_name() if callable(get_name) else type(model).__name__
    return name in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()


# The loss types transformers 5.24 maps to ``ForCausalLMLoss`` (``LOSS_MAPPING``), for when it is not loaded.
CAUSAL_LM_LOSS_TYPES = frozenset({"ForCausalLM", "ForConditionalGeneration", "CsmForConditionalGeneration"})


def loss_shifts_labels(model: nn.Module) -> bool:
    """Whether ``model``'s own loss shifts its labels, so ``labels[..., 1:]`` is what it counts (HF rule).

    HF asks whether the model's ``loss_type`` maps to ``ForCausalLMLoss`` in transformers'
    ``LOSS_MAPPING``: that includes the decoder-only ``ForConditionalGeneration`` models, and
    excludes encoder-decoder models, whose labels line up with their (right-shifted) decoder inputs.
    """
    loss_type = getattr(model, "loss_type", None)
    if loss_type is None or getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return False
    if "transformers" in sys.modules:
        try:
            from transformers.loss.loss_utils import LOSS_MAPPING, ForCausalLMLoss
        except ImportError:  # pragma: no cover - a transformers without the mapping
            pass
        else:
            return LOSS_MAPPING.get(loss_type) is ForCausalLMLoss
    return loss_type in CAUSAL_LM_LOSS_TYPES


def count_label_items(batch: Any, shift: bool) -> torch.Tensor | None:
    """Labels that carry a loss in one micro-batch (not ``-100``), the way HF counts them.

    ``shift_labels`` from the collator is used as given; otherwise ``labels[..., 1:]`` when the
    model's loss shifts them (a causal LM never predicts position 0). ``None`` when the batch has
    no countable labels.
    """
    if not isinstance(batch, Mapping) or "labels" not in batch:
        return None
    try:
        if "shift_labels" in batch:
            labels = batch["shift_labels"]
        elif shift:
            labels = batch["labels"][..., 1:]
        else:
            labels = batch["labels"]
        return labels.ne(IGNORE_INDEX).sum()
    except (TypeError, AttributeError):
        return None


@dataclass
class WindowWeights:
    """Each micro-batch's share of its window's label items, for losses the model could not normalise.

    ``shares[i]`` belongs to ``batches[i]``, matched by identity so that a stale weight is never
    applied to a batch from elsewhere. Computed once per window, in one vector operation.
    """

    batches: list[Any]
    shares: torch.Tensor

    @classmethod
    def of(cls, batches: list[Any], counts: list[torch.Tensor], device: Any, spans: Any = None) -> WindowWeights:
        """Shares ``count / total``; with ``spans`` (an accelerator) the total is summed over its
        processes and the shares multiplied by their number, since the data-parallel all-reduce
        averages the gradients."""
        # float64 keeps the ratios exact enough for a float64 model; MPS has no float64
        dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64
        items = torch.stack([count.to(device) for count in counts]).to(dtype)
        total = items.sum()
        scale = 1
        if spans is not None:
            total = spans.gather(total.reshape(1)).sum()
            scale = spans.num_processes
        # a window without any item gives NaN either way; clamping avoids a host sync to check
        return cls(batches, items * scale / total.clamp(min=1))

    def share_of(self, batch: Any) -> torch.Tensor | None:
        """The weight of ``batch`` if it is one of this window's micro-batches (the very object)."""
        for index, member in enumerate(self.batches):
            if batch is member:
                return self.shares[index]
        return None


@dataclass
class NanInfGuard:
    """Per-window bookkeeping for the ``skip``/``stop`` policies.

    It remembers the running loss sum before the window, so that a window that went non-finite
    can be taken back out of the logged loss, and where its first non-finite loss came from.
    """

    owner: object | None = None
    start_loss: torch.Tensor | None = None
    first_bad: str | None = None

    def open(self, owner: object, tr_loss: torch.Tensor) -> None:
        """Called before each micro-batch's loss is added; the first of a window (or run) keeps the sum."""
        if self.owner is not owner:
            self.owner, self.start_loss, self.first_bad = owner, None, None
        if self.start_loss is None:
            self.start_loss = tr_loss.detach().clone()

    def mark(self, where: str) -> None:
        """Record a non-finite loss; the first one names the window in the warning."""
        if self.first_bad is None:
            self.first_bad = where

    def close(self) -> tuple[torch.Tensor | None, str | None]:
        """End the window: the loss sum it started from and where it first went non-finite."""
        result = (self.start_loss, self.first_bad)
        self.start_loss, self.first_bad = None, None
        return result


class NonFiniteWarning(UserWarning):
    """A training loss or gradient norm was NaN or infinite; warned once per run and kind, naming the step."""


class NonFiniteWatch:
    """The first step of a run whose training loss (or gradient norm) was not finite, warned about once.

    Recording costs no kernel and no host sync on the hot path: ``note`` keeps a reference to the
    step's (detached, 0-d) tensor; the tensors are checked together, with one read, only where the
    loop syncs anyway (the log state, a save, the end of training). Every :data:`FOLD` steps without
    a log they are folded on the device into the smallest bad step so far (a few kernels, still no
    sync), so memory stays bounded. A value the loop already checked on the host is given to ``seen``.
    A watch for a CPU run (``device``) reads each 0-d value when it is noted instead: there is no
    queued device work to wait for, and nothing is kept.
    """

    FOLD = 1024

    def __init__(self, device: torch.device | str | None = None) -> None:
        # On the CPU there is no device queue to wait for: a scalar is read when noted and nothing
        # is kept (500 kept 0-d tensors are a quarter megabyte between two logs)
        self._read_at_once = device is not None and torch.device(device).type == "cpu"
        self._values: dict[str, list[tuple[int, torch.Tensor]]] = {}
        self._folded: dict[str, torch.Tensor] = {}
        self._first: dict[str, int] = {}
        self._warned: set[str] = set()

    def note(self, kind: str, value: torch.Tensor, step: int) -> None:
        """Remember ``value`` of ``step`` (no kernel, no sync); on the CPU, check a scalar at once."""
        if kind in self._first:
            return
        if self._read_at_once and value.dim() == 0:
            if not math.isfinite(value.item()):
                self._first[kind] = step
            return
        values = self._values.setdefault(kind, [])
        values.append((step, value.detach() if value.requires_grad else value))
        if len(values) >= self.FOLD:
            self._fold(kind)

    def _fold(self, kind: str) -> None:
        """Reduce the remembered values to the smallest bad step on their device (``-1`` ... none)."""
        values = self._values.pop(kind, [])
        if not values:
            return
        bad = torch.isfinite(torch.stack([v for _, v in values]).reshape(len(values), -1)).logical_not_().any(1)
        steps = torch.tensor([s for s, _ in values], dtype=torch.long).to(bad.device, non_blocking=True)
        first = torch.where(bad, steps, torch.iinfo(torch.long).max).min()
        previous = self._folded.get(kind)
        self._folded[kind] = first if previous is None else torch.minimum(previous, first)

    def settle(self, kind: str, read: float, only: torch.Tensor | None = None) -> None:
        """The caller read ``read`` on the host and it is finite: the pending values of ``kind`` need
        no device check if ``read`` accounts for all of them, being their sum (``only`` not given)
        or the one pending value itself (``only``). A log's loss sum settles the losses since the
        last log for free, where folding them costs a few kernels per log."""
        values = self._values.get(kind)
        if not values or not math.isfinite(read):
            return
        if only is None or (len(values) == 1 and values[0][1] is only):
            del self._values[kind]

    def seen(self, kind: str, step: int) -> None:
        """Record a non-finite value the caller already found on the host."""
        self._first.setdefault(kind, step)

    def report(self, run: Any) -> None:
        """Warn once per kind about the first non-finite value so far (one read per pending kind)."""
        for kind in list(self._values):
            self._fold(kind)
        never = torch.iinfo(torch.long).max
        for kind, first in list(self._folded.items()):
            step = int(first.item())
            if step != never:
                self._first.setdefault(kind, step)
            del self._folded[kind]
        for kind, step in self._first.items():
            if kind in self._warned:
                continue
            self._warned.add(kind)
            name = "training loss" if kind == "loss" else "gradient norm"
            policy = getattr(run.args, "nan_inf_policy", "filter")
            warnings.warn(
                f"the {name} was NaN or infinite at step {step} (global_step {step}); {_consequence(kind, policy)} "
                "(see docs/checkpoints.md, 'What can go wrong')",
                NonFiniteWarning,
                stacklevel=2,
            )


def _consequence(kind: str, policy: str) -> str:
    """What the non-finite value did to the run under ``policy``, and what to do about it."""
    if kind == "loss" and policy != "filter":
        return f"with nan_inf_policy={policy!r} that step's update was kept out of the weights"
    consequence = (
        f"with nan_inf_policy={policy!r} the weights may no longer be finite, and checkpoints with non-finite "
        "weights are not saved"
    )
    if policy == "filter":
        consequence += "; use nan_inf_policy='skip' or 'stop' to keep such updates out of the weights"
    return consequence


def loss_from_outputs(outputs: Any, inputs: Mapping[str, Any], model_name: str) -> torch.Tensor:
    """The loss in a model's outputs (HF's rules), or an error that says what the model returned."""
    if isinstance(outputs, Mapping):
        if "loss" not in outputs or outputs["loss"] is None:
            raise ValueError(
                f"{model_name} returned no loss (output keys: {', '.join(outputs.keys())}; input keys: "
                f"{', '.join(inputs.keys())}). Pass labels the model accepts, or give the Trainer a "
                "compute_loss_func. A bare base model without a head cannot be trained."
            )
        return outputs["loss"]
    if isinstance(outputs, (tuple, list)):
        return outputs[0]
    if isinstance(outputs, torch.Tensor) and outputs.dim() == 0:
        return outputs
    raise ValueError(
        f"{model_name} returned {type(outputs).__name__}; the Trainer needs a loss: a dict with "
        "'loss', a tuple whose first element is the loss, or a scalar tensor"
    )
