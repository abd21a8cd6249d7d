"""save_model and checkpoints of a transformers model hold what HF's hold, and transformers loads them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

import statetrain

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

# HF pickles its arguments (training_args.bin); statetrain writes them as JSON (docs/differences.md)
ARGUMENT_FILES = {"training_args.bin", "training_args.json"}


def tokenizer() -> Any:
    vocab = {word: i for i, word in enumerate(["<pad>", "<eos>", *[f"w{i}" for i in range(30)]])}
    built = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<pad>"))
    built.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=built, pad_token="<pad>", eos_token="<eos>")


def gpt2() -> Any:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=32, n_positions=16, n_embd=16, n_layer=2, n_head=2, pad_token_id=0, eos_token_id=1, bos_token_id=1
    )
    return transformers.GPT2LMHeadModel(config)


def rows() -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(2, 32, (8,), generator=generator)} for _ in range(8)]


def train_and_save(module: Any, folder: Path, through_collator: bool) -> Any:
    args = module.TrainingArguments(
        str(folder),
        max_steps=2,
        save_strategy="steps",
        save_steps=2,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        per_device_train_batch_size=4,
        optim="adamw_torch",
    )
    collator = transformers.DataCollatorForLanguageModeling(tokenizer(), mlm=False)
    given = (
        {"data_collator": collator}
        if through_collator
        else {"processing_class": tokenizer(), "data_collator": collator}
    )
    trainer = module.Trainer(model=gpt2(), args=args, train_dataset=rows(), **given)
    trainer.train()
    trainer.save_model(str(folder / "final"))
    return trainer


def files(folder: Path) -> set[str]:
    return set(os.listdir(folder)) - ARGUMENT_FILES


@pytest.mark.parametrize("through_collator", [False, True], ids=["processing_class", "collator_tokenizer"])
def test_save_model_equals_hfs_and_loads_with_auto_classes(through_collator: bool, tmp_path: Path) -> None:
    ours = train_and_save(statetrain, tmp_path / "ours", through_collator)
    train_and_save(transformers, tmp_path / "hf", through_collator)
    final, hf_final = tmp_path / "ours" / "final", tmp_path / "hf" / "final"
    assert files(final) == files(hf_final)
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= files(final)
    mine = safetensors.torch.load_file(str(final / "model.safetensors"))
    theirs = safetensors.torch.load_file(str(hf_final / "model.safetensors"))
    assert sorted(mine) == sorted(theirs)  # the tied lm_head is stored under HF's name only
    for name, tensor in theirs.items():
        torch.testing.assert_close(mine[name], tensor, rtol=0, atol=1e-6)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(final))
    for name, tensor in ours.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert transformers.AutoTokenizer.from_pretrained(str(final)).get_vocab() == tokenizer().get_vocab()
    assert transformers.GenerationConfig.from_pretrained(str(final)).eos_token_id == 1


def test_checkpoints_hold_hfs_model_files_and_resume(tmp_path: Path) -> None:
    train_and_save(statetrain, tmp_path / "ours", through_collator=True)
    train_and_save(transformers, tmp_path / "hf", through_collator=True)
    model_files = {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert model_files <= files(tmp_path / "ours" / "checkpoint-2")
    assert model_files <= files(tmp_path / "hf" / "checkpoint-2")
    args = statetrain.TrainingArguments(
        str(tmp_path / "ours"),
        max_steps=3,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        per_device_train_batch_size=4,
        optim="adamw_torch",
    )
    collator = transformers.DataCollatorForLanguageModeling(tokenizer(), mlm=False)
    resumed = statetrain.Trainer(model=gpt2(), args=args, train_dataset=rows(), data_collator=collator)
    resumed.train(resume_from_checkpoint=str(tmp_path / "ours" / "checkpoint-2"))
    assert resumed.state.global_step == 3
