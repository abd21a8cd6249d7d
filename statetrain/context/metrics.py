"""What ``train()`` returns and how throughput is reported (HF names and rounding)."""

from __future__ import annotations

import time
from typing import Any, NamedTuple


class TrainOutput(NamedTuple):
    """HF's ``TrainOutput``: the final step, the mean training loss, and the summary metrics."""

    global_step: int
    training_loss: float
    metrics: dict[str, Any]


def speed_metrics(
    split: str,
    start_time: float,
    num_samples: float | None = None,
    num_steps: int | None = None,
    num_tokens: int | None = None,
) -> dict[str, float]:
    """``<split>_runtime`` and per-second rates, rounded as HF rounds them."""
    runtime = time.time() - start_time
    result = {f"{split}_runtime": round(runtime, 4)}
    if runtime == 0:
        return result
    if num_samples is not None:
        result[f"{split}_samples_per_second"] = round(num_samples / runtime, 3)
    if num_steps is not None:
        result[f"{split}_steps_per_second"] = round(num_steps / runtime, 3)
    if num_tokens is not None:
        result[f"{split}_tokens_per_second"] = round(num_tokens / runtime, 3)
    return result
