"""The ``DataLoader`` keyword arguments the ``dataloader_*`` training arguments ask for.

Checked here rather than left to torch, so a wrong combination names the training argument.
"""

from __future__ import annotations

from typing import Any

__all__ = ["loader_options"]


def loader_options(args: Any) -> dict[str, Any]:
    """Workers, pinning, persistence, prefetching and worker start method (HF ``_get_dataloader``)."""
    workers = args.dataloader_num_workers
    if args.dataloader_persistent_workers and workers == 0:
        raise ValueError(
            "TrainingArguments.dataloader_persistent_workers=True keeps worker processes alive between "
            "epochs, but dataloader_num_workers=0 loads in the main process, so there are none to keep; "
            "set dataloader_num_workers > 0 or dataloader_persistent_workers=False"
        )
    options: dict[str, Any] = {
        "num_workers": workers,
        "pin_memory": args.dataloader_pin_memory,
        "persistent_workers": args.dataloader_persistent_workers,
    }
    if workers > 0:
        options["prefetch_factor"] = args.dataloader_prefetch_factor
        if args.dataloader_multiprocessing_context is not None:
            options["multiprocessing_context"] = args.dataloader_multiprocessing_context
    return options
