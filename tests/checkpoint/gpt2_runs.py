"""A tiny GPT-2 and one run definition that both transformers' Trainer and statetrain's execute.

Shared by the HF-format checkpoint tests and the PEFT tests: the same model (built from a config,
seeded), the same rows and the same arguments under either library.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel

VOCAB = 50


def tiny_gpt2(seed: int = 0, dropout: float = 0.1) -> GPT2LMHeadModel:
    """Two layers, 16 wide; dropout on, so a resume that lost the RNG would diverge."""
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=2,
        n_head=2,
        n_embd=16,
        vocab_size=VOCAB,
        n_positions=16,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config)


def lm_rows(n: int = 40, length: int = 12, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        ids = torch.randint(0, VOCAB, (length,), generator=g)
        rows.append({"input_ids": ids, "labels": ids.clone()})
    return rows


def lm_args(module: Any, output_dir: str, **overrides: Any) -> Any:
    """``module.TrainingArguments`` (transformers or statetrain) for a short accumulated cosine run."""
    options: dict[str, Any] = {
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "max_steps": 8,
        "save_steps": 3,
        "logging_steps": 1,
        "learning_rate": 1e-3,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 2,
        "use_cpu": True,
        "report_to": "none",
        "disable_tqdm": True,
    }
    options.update(overrides)
    return module.TrainingArguments(output_dir, **options)


def step_logs(history: list[dict[str, Any]], after: int = 0) -> list[dict[str, Any]]:
    """The per-step training logs after ``after``, without the timing fields."""
    keep = ("step", "loss", "grad_norm", "learning_rate", "epoch")
    return [{k: e[k] for k in keep if k in e} for e in history if "loss" in e and e["step"] > after]


def assert_logs_close(ours: list[dict[str, Any]], theirs: list[dict[str, Any]], tol: float = 1e-6) -> None:
    assert [e["step"] for e in ours] == [e["step"] for e in theirs]
    assert ours, "no training logs to compare"
    for a, b in zip(ours, theirs, strict=True):
        for key in ("loss", "grad_norm", "learning_rate", "epoch"):
            assert abs(float(a[key]) - float(b[key])) <= tol, (a["step"], key, a[key], b[key])
