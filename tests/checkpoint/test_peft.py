"""A peft LoRA model through statetrain, against transformers.Trainer (issue 13, item 5).

Checkpoints and ``save_model`` hold the adapter (``adapter_model.safetensors``,
``adapter_config.json``, peft's README) and not the base weights, with HF's file set (HF's pickles
being statetrain's safetensors + JSON trees); a resume is bit-exact; ``load_best_model_at_end`` puts
the best checkpoint's adapter back; ``PeftModel.from_pretrained`` loads what ``save_model`` wrote.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import peft
import pytest
import torch
import transformers
from safetensors.torch import load_file

import statetrain
from statetrain.checkpoint.output_lock import LOCK_NAME
from tests.checkpoint.gpt2_runs import assert_logs_close, lm_args, lm_rows, step_logs, tiny_gpt2
from tests.helpers import StopAfter

pytestmark = pytest.mark.slow

BEST = {
    "eval_strategy": "steps",
    "eval_steps": 3,
    "load_best_model_at_end": True,
    "metric_for_best_model": "loss",
    "greater_is_better": False,
    "learning_rate": 1e-2,
}
"""lr 1e-2 overshoots: the best eval loss is at step 3, the run ends at 8, so restoring it matters."""


def lora_gpt2() -> Any:
    model = tiny_gpt2()
    torch.manual_seed(3)
    config = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["c_attn"], lora_dropout=0.1, fan_in_fan_out=True, task_type="CAUSAL_LM"
    )
    return peft.get_peft_model(model, config)


def train(module: Any, out: Path, **overrides: Any) -> Any:
    trainer = module.Trainer(
        model=lora_gpt2(),
        args=lm_args(module, str(out), **{**BEST, **overrides}),
        train_dataset=lm_rows(),
        eval_dataset=lm_rows(8, seed=5),
    )
    trainer.train()
    trainer.save_model(str(out / "final"))
    return trainer


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Path, Any]:
    root = tmp_path_factory.mktemp("peft")
    return root / "hf", train(transformers, root / "hf"), root / "st", train(statetrain, root / "st")


def as_statetrain_names(names: set[str]) -> set[str]:
    """HF's pickles under statetrain's names (a tree is JSON + safetensors), plus statetrain's own files."""
    renamed = {"training_args.bin": {"training_args.json"}}
    for stem in ("optimizer", "scheduler", "rng_state"):
        renamed[f"{stem}.pt" if stem != "rng_state" else "rng_state.pth"] = {f"{stem}.json", f"{stem}.safetensors"}
    out: set[str] = set()
    for name in names:
        out |= renamed.get(name, {name})
    return out


def test_checkpoints_and_save_model_hold_the_adapter_as_hf_does(runs: tuple[Path, Any, Path, Any]) -> None:
    hf_out, _, st_out, _ = runs
    assert sorted(n for n in os.listdir(st_out) if n != LOCK_NAME) == sorted(os.listdir(hf_out))  # + the run lock
    for folder in ("checkpoint-3", "checkpoint-8", "final"):
        hf_names, ours = set(os.listdir(hf_out / folder)), set(os.listdir(st_out / folder))
        extra = {"engine_state.json", "statetrain_manifest.json"} if folder != "final" else set()
        assert ours == as_statetrain_names(hf_names) | extra, folder
        assert "model.safetensors" not in ours and "config.json" not in ours
        hf_tensors = load_file(str(hf_out / folder / "adapter_model.safetensors"))
        our_tensors = load_file(str(st_out / folder / "adapter_model.safetensors"))
        assert sorted(our_tensors) == sorted(hf_tensors) and all("lora_" in k for k in our_tensors)
        for key, value in hf_tensors.items():
            assert torch.allclose(our_tensors[key], value, atol=1e-6), (folder, key)


def test_training_matches_hf_and_load_best_restores_the_best_adapter(runs: tuple[Path, Any, Path, Any]) -> None:
    _, hf, st_out, ours = runs
    assert_logs_close(step_logs(ours.state.log_history), step_logs(hf.state.log_history))
    assert ours.state.best_model_checkpoint == str(st_out / "checkpoint-3")
    best = load_file(str(st_out / "checkpoint-3" / "adapter_model.safetensors"))
    last = load_file(str(st_out / "checkpoint-8" / "adapter_model.safetensors"))
    live = peft.get_peft_model_state_dict(ours.model)
    assert sorted(live) == sorted(best)
    assert all(torch.equal(live[k], best[k]) for k in best)
    assert not all(torch.equal(best[k], last[k]) for k in best)
    hf_live = peft.get_peft_model_state_dict(hf.model)
    assert all(torch.allclose(live[k], hf_live[k], atol=1e-6) for k in best)


def test_save_model_loads_with_peft_from_pretrained(runs: tuple[Path, Any, Path, Any]) -> None:
    _, _, st_out, ours = runs
    loaded = peft.PeftModel.from_pretrained(tiny_gpt2(), str(st_out / "final")).eval()
    ours.model.eval()
    ids = torch.arange(10).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, ours.model(input_ids=ids).logits)


def test_resume_is_bit_exact(tmp_path: Path) -> None:
    args = {"load_best_model_at_end": False, "eval_strategy": "no"}
    reference = statetrain.Trainer(
        model=lora_gpt2(), args=lm_args(statetrain, str(tmp_path / "ref"), **args), train_dataset=lm_rows()
    )
    reference.train()
    stopped = statetrain.Trainer(
        model=lora_gpt2(),
        args=lm_args(statetrain, str(tmp_path / "run"), **args),
        train_dataset=lm_rows(),
        callbacks=[StopAfter(3)],
    )
    stopped.train()
    resumed = statetrain.Trainer(
        model=lora_gpt2(), args=lm_args(statetrain, str(tmp_path / "run"), **args), train_dataset=lm_rows()
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-3"))
    for (name, a), b in zip(reference.model.named_parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b), name
    assert step_logs(resumed.state.log_history) == step_logs(reference.state.log_history)
