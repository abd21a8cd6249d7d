"""One rank of an ``average_tokens_across_devices`` run, for ``test_ddp_items.py``.

Usage::

    torchrun --nproc_per_node 2 tests/distributed/run_ddp_items.py CONFIG.json

``CONFIG.json`` holds ``{"scenarios": [run, ...]}`` (see :data:`DEFAULTS`). Rows have uneven numbers
of label items, so the two processes' windows hold different counts: only the count summed across
processes makes two processes train like one process on the global batch. Each run writes
``<out>/result_<rank>.json`` (world size seen, the ``num_items_in_batch`` each forward got, the
logged losses) and rank 0 writes ``<out>/params.safetensors``.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402

from statetrain import Trainer, TrainingArguments  # noqa: E402
from tests.helpers import TokenModel, token_rows  # noqa: E402

CLASSES = 5

DEFAULTS: dict[str, Any] = {
    "out": None,
    "model": "kwargs",  # "kwargs": normalises by num_items_in_batch; "plain": its own mean, no **kwargs
    "average": True,
    "rows": 16,
    "batch": 2,
    "accumulation": 2,
    "max_steps": 2,
    "seed": 5,
    "use_cpu": False,
}


class CountingTokenModel(TokenModel):
    """``TokenModel`` recording the ``num_items_in_batch`` of every forward."""

    def __init__(self) -> None:
        super().__init__(classes=CLASSES)
        self.given: list[float | None] = []

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, **kwargs: Any) -> dict[str, Any]:
        n = kwargs.get("num_items_in_batch")
        self.given.append(None if n is None else float(n))
        return super().forward(input_ids, labels, **kwargs)


class PlainTokenModel(nn.Module):
    """No ``**kwargs``: its loss is the mean over its own micro-batch's items."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = TokenModel(classes=CLASSES)
        self.given: list[float | None] = []

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        logits = self.inner(input_ids)["logits"]
        out: dict[str, Any] = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits.reshape(-1, CLASSES), labels.reshape(-1))
        return out


def build_trainer(config: dict[str, Any], batch: int) -> Trainer:
    """The run of ``config`` with ``batch`` rows per process (the global batch on one process)."""
    torch.manual_seed(config["seed"])
    model = CountingTokenModel() if config["model"] == "kwargs" else PlainTokenModel()
    args = TrainingArguments(
        config["out"],
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=config["accumulation"],
        max_steps=config["max_steps"],
        learning_rate=0.5,
        optim="sgd",
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        seed=config["seed"],
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        report_to="none",
        ddp_timeout=1800,  # a busy machine may stall a rank for minutes; test hangs are caught by progress
        average_tokens_across_devices=config["average"],
        use_cpu=config["use_cpu"],
    )
    return Trainer(model=model, args=args, train_dataset=token_rows(config["rows"], classes=CLASSES, seed=3))


def run_one(config: dict[str, Any]) -> bool:
    rank = int(os.environ.get("RANK", "0"))
    out = Path(config["out"])
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"rank": rank}
    ok = True
    try:
        trainer = build_trainer(config, config["batch"])
        result["world_size"] = trainer.args.world_size
        result["accelerate_processes"] = trainer.accelerator.num_processes
        result["torch_world_size"] = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        trainer.train()
        model = trainer.accelerator.unwrap_model(trainer.model)
        result["given"] = model.given
        result["losses"] = [e["loss"] for e in trainer.state.log_history if "loss" in e]
        if rank == 0:
            params = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters()}
            save_file(params, str(out / "params.safetensors"))
    except Exception as exc:
        ok = False
        result["error"] = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    (out / f"result_{rank}.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    return ok


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    ok = True
    for scenario in spec["scenarios"]:
        ok = run_one({**DEFAULTS, **scenario}) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
