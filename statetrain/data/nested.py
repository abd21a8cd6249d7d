"""Nested outputs (tensors in tuples, lists and dicts) as HF's evaluation loop handles them.

Predictions of different sequence lengths across batches are padded on dimension 1 with -100
before concatenation, so they stack into one array, exactly as HF pads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

PAD_INDEX = -100


def nested_detach(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(nested_detach(v) for v in value)
    if isinstance(value, Mapping):
        return type(value)({k: nested_detach(v) for k, v in value.items()})  # type: ignore[call-arg]
    return value.detach() if isinstance(value, torch.Tensor) else value


def nested_numpify(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(nested_numpify(v) for v in value)
    if isinstance(value, Mapping):
        return type(value)({k: nested_numpify(v) for k, v in value.items()})  # type: ignore[call-arg]
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.to(torch.float32)
        return tensor.numpy()
    return value


def _pad_and_concat(first: Any, second: Any, pad: int) -> Any:
    """Concatenate on dim 0; when dim 1 differs, pad the shorter one with ``pad`` first."""
    is_torch = isinstance(first, torch.Tensor)
    if is_torch:
        first = torch.atleast_1d(first)
        second = torch.atleast_1d(second)
    else:
        first = np.atleast_1d(first)
        second = np.atleast_1d(second)
    if len(first.shape) == 1 or first.shape[1] == second.shape[1]:
        return torch.cat((first, second), dim=0) if is_torch else np.concatenate((first, second), axis=0)
    rows = first.shape[0] + second.shape[0]
    shape = (rows, max(first.shape[1], second.shape[1]), *first.shape[2:])
    out = first.new_full(shape, pad) if is_torch else np.full(shape, pad, dtype=first.dtype)
    out[: first.shape[0], : first.shape[1]] = first
    out[first.shape[0] :, : second.shape[1]] = second
    return out


def nested_concat(first: Any, second: Any, padding_index: int = PAD_INDEX) -> Any:
    """Concatenate two nested structures of the same shape, leaf by leaf."""
    if type(first) is not type(second):
        raise TypeError(f"cannot concatenate {type(first).__name__} with {type(second).__name__}")
    if isinstance(first, (list, tuple)):
        return type(first)(nested_concat(a, b, padding_index) for a, b in zip(first, second, strict=True))
    if isinstance(first, Mapping):
        return type(first)(  # type: ignore[call-arg]
            {k: nested_concat(v, second[k], padding_index) for k, v in first.items()}
        )
    if isinstance(first, (torch.Tensor, np.ndarray)):
        return _pad_and_concat(first, second, padding_index)
    raise TypeError(f"unsupported type for concatenation: {type(first).__name__}")


class EvalLoopContainer:
    """Accumulates one kind of output over an evaluation, moving it to numpy when asked."""

    def __init__(self, do_nested_concat: bool = True, padding_index: int = PAD_INDEX) -> None:
        self.do_nested_concat = do_nested_concat
        self.padding_index = padding_index
        self.tensors: Any = None
        self.arrays: Any = None

    def add(self, tensors: Any) -> None:
        if self.tensors is None:
            self.tensors = tensors if self.do_nested_concat else [tensors]
        elif self.do_nested_concat:
            self.tensors = nested_concat(self.tensors, tensors, self.padding_index)
        else:
            self.tensors.append(tensors)

    def to_cpu_and_numpy(self) -> None:
        """Free device memory: what was accumulated so far moves into numpy arrays."""
        if self.tensors is None:
            return
        arrays = nested_numpify(self.tensors)
        if self.arrays is None:
            self.arrays = arrays
        elif self.do_nested_concat:
            self.arrays = nested_concat(self.arrays, arrays, self.padding_index)
        else:
            self.arrays.extend(arrays)
        self.tensors = None

    def get_arrays(self) -> Any:
        self.to_cpu_and_numpy()
        return self.arrays


def find_batch_size(value: Any) -> int | None:
    """The first dimension of the first tensor found in a (nested) batch."""
    if isinstance(value, (list, tuple)):
        for item in value:
            found = find_batch_size(item)
            if found is not None:
                return found
    elif isinstance(value, Mapping):
        for item in value.values():
            found = find_batch_size(item)
            if found is not None:
                return found
    elif isinstance(value, (torch.Tensor, np.ndarray)):
        return int(value.shape[0]) if len(value.shape) >= 1 else None
    return None


def denumpify_detensorize(metrics: Any) -> Any:
    """Metrics as plain Python numbers, whatever ``compute_metrics`` returned."""
    if isinstance(metrics, (list, tuple)):
        return type(metrics)(denumpify_detensorize(m) for m in metrics)
    if isinstance(metrics, dict):
        return type(metrics)({k: denumpify_detensorize(v) for k, v in metrics.items()})
    if isinstance(metrics, np.generic):
        return metrics.item()
    if isinstance(metrics, torch.Tensor) and metrics.numel() == 1:
        return metrics.item()
    return metrics
