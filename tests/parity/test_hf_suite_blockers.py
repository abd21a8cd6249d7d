"""What made transformers' own Trainer tests fail on statetrain (issue 13, item 7), against transformers.

Each test runs the same thing on both libraries: ``enable_jit_checkpoint`` is accepted (statetrain
checkpoints on SIGTERM in every run), a ``TrainingArguments`` dataclass subclass with its own fields
trains, ``dataclasses.asdict(trainer.state)`` works, ``skip_memory_metrics=False`` adds HF's memory
metrics, and the resume errors carry HF's wording.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import transformers

import statetrain
from tests.helpers import TinyRegressor, regression_rows

LIBRARIES = [transformers, statetrain]


def make(module: Any, out: Path, args_class: Any = None, **options: Any) -> Any:
    args_class = args_class or module.TrainingArguments
    options = {"save_strategy": "no", **options}
    args = args_class(str(out), use_cpu=True, report_to="none", disable_tqdm=True, max_steps=2, **options)
    return module.Trainer(
        model=TinyRegressor(), args=args, train_dataset=regression_rows(8), eval_dataset=regression_rows(8)
    )


@pytest.mark.parametrize("module", LIBRARIES, ids=lambda m: m.__name__)
def test_enable_jit_checkpoint_and_subclass_fields_train(module: Any, tmp_path: Path) -> None:
    @dataclasses.dataclass
    class MyArgs(module.TrainingArguments):  # type: ignore[misc,name-defined]
        alpha: float = 1.0

    trainer = make(module, tmp_path, MyArgs, alpha=0.5, enable_jit_checkpoint=True)
    trainer.train()
    assert trainer.args.alpha == 0.5 and trainer.state.global_step == 2
    state = dataclasses.asdict(trainer.state)
    assert state["global_step"] == 2
    assert set(state) == {f.name for f in dataclasses.fields(transformers.TrainerState)}


@pytest.mark.parametrize("module", LIBRARIES, ids=lambda m: m.__name__)
def test_trainer_control_is_a_dataclass_as_hfs(module: Any, tmp_path: Path) -> None:
    trainer = make(module, tmp_path)
    trainer.control.should_save = True
    control = dataclasses.asdict(trainer.control)
    assert control == {f.name: f.name == "should_save" for f in dataclasses.fields(transformers.TrainerControl)}
    assert dataclasses.replace(trainer.control, should_save=False) == type(trainer.control)()


def test_memory_metrics_have_hf_names(tmp_path: Path) -> None:
    names = []
    for module in LIBRARIES:
        trainer = make(module, tmp_path / module.__name__, skip_memory_metrics=False)
        train = trainer.train().metrics
        evaluate = trainer.evaluate()
        test = trainer.predict(regression_rows(8)).metrics
        names.append([sorted(k for k in m if "_mem_" in k) for m in (train, evaluate, test)])
        assert isinstance(train["train_mem_cpu_alloc_delta"], int) and "before_init_mem_cpu" in train
        assert not any("_mem_" in k for k in trainer.state.log_history[-1] if k.startswith("eval"))
    assert names[0] == names[1]
    assert all("_mem_" not in key for key in make(statetrain, tmp_path / "off").train().metrics)


@pytest.mark.parametrize("module", LIBRARIES, ids=lambda m: m.__name__)
def test_resume_errors_carry_hf_wording(module: Any, tmp_path: Path) -> None:
    trainer = make(module, tmp_path / "empty")
    with pytest.raises(ValueError, match=r"No valid checkpoint found in output directory"):
        trainer.train(resume_from_checkpoint=True)
    with pytest.raises(ValueError, match=r"Can't find a valid checkpoint at .*bogus"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-bogus"))


@pytest.mark.parametrize("module", LIBRARIES, ids=lambda m: m.__name__)
def test_missing_best_metric_says_it_is_not_found(module: Any, tmp_path: Path) -> None:
    trainer = make(
        module,
        tmp_path,
        eval_strategy="steps",
        eval_steps=1,
        metric_for_best_model="nope",
        load_best_model_at_end=True,
        save_strategy="steps",
        save_steps=1,
    )
    with pytest.raises(KeyError, match=r"metric_for_best_model.*'eval_nope'.*not found in the evaluation metrics"):
        trainer.train()


@pytest.mark.parametrize("module", LIBRARIES, ids=lambda m: m.__name__)
def test_strict_cache_steps_and_dtype_fields_in_to_dict(module: Any, tmp_path: Path) -> None:
    import torch

    with pytest.raises(ValueError, match="torch_empty_cache_steps"):
        module.TrainingArguments(str(tmp_path), torch_empty_cache_steps=1.0)

    @dataclasses.dataclass
    class DtypeArgs(module.TrainingArguments):  # type: ignore[misc,name-defined]
        dtype: torch.dtype = torch.float32

    assert DtypeArgs(str(tmp_path), dtype=torch.bfloat16).to_dict()["dtype"] == "bfloat16"


@pytest.mark.parametrize("module", LIBRARIES, ids=lambda m: m.__name__)
def test_persistent_workers_eval_loader_is_built_once(module: Any, tmp_path: Path) -> None:
    trainer = make(module, tmp_path, dataloader_num_workers=1, dataloader_persistent_workers=True)
    first = trainer.get_eval_dataloader()
    assert trainer.get_eval_dataloader() is first
    if module is statetrain:  # a dataset passed in is a different one: HF would hand back the cached loader
        assert trainer.get_eval_dataloader(regression_rows(4)) is not first
    plain = make(module, tmp_path / "plain")
    assert plain.get_eval_dataloader() is not plain.get_eval_dataloader()


@pytest.mark.parametrize("module", LIBRARIES, ids=lambda m: m.__name__)
def test_log_level_governs_the_banner_on_transformers_logging(module: Any, tmp_path: Path) -> None:
    """HF's test_log_level: ``log_level`` sets transformers' verbosity, whose handlers show the banner."""
    import io
    import logging

    from transformers.utils import logging as hf_logging

    library_logger = hf_logging.get_logger()
    before = hf_logging.get_verbosity()
    statetrain_logger = logging.getLogger("statetrain")
    statetrain_before = statetrain_logger.level  # log_level="error" sets it too; later tests read it
    shown = {}
    try:
        for level in ("debug", "error", "passive"):
            stream = io.StringIO()
            handler = logging.StreamHandler(stream)
            library_logger.addHandler(handler)
            hf_logging.set_verbosity(logging.INFO)
            try:
                make(module, tmp_path / level, log_level=level).train()
            finally:
                library_logger.removeHandler(handler)
            shown[level] = "Running training" in stream.getvalue()
            if level == "error":
                assert hf_logging.get_verbosity() == logging.ERROR
    finally:
        hf_logging.set_verbosity(before)
        statetrain_logger.setLevel(statetrain_before)
    assert shown == {"debug": True, "error": False, "passive": True}


def test_tokenizer_special_tokens_reach_both_configs_at_train(tmp_path: Path) -> None:
    """HF's test_special_token_alignment, offline: new PAD/BOS/EOS tokens reach config and generation config."""
    from tests.checkpoint.gpt2_runs import lm_args, lm_rows, tiny_gpt2
    from tests.parity.scripts.hf_style import local_tokenizer

    seen = []
    for module in LIBRARIES:
        tokenizer = local_tokenizer()
        tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_end|>", "<|im_start|>"]})
        tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token = "<|im_end|>", "<|im_end|>", "<|im_start|>"
        model = tiny_gpt2()  # its config and generation config say 0 for BOS and EOS, nothing for PAD
        args = lm_args(module, str(tmp_path / module.__name__), max_steps=1)
        trainer = module.Trainer(model=model, args=args, train_dataset=lm_rows(4), processing_class=tokenizer)
        trainer.train()
        config, generation = model.config, model.generation_config
        ids = ("eos_token_id", "bos_token_id", "pad_token_id")
        seen.append([getattr(config, n) for n in ids] + [getattr(generation, n) for n in ids])
        assert config.eos_token_id == tokenizer.eos_token_id and config.pad_token_id == tokenizer.pad_token_id
    assert seen[0] == seen[1]
    assert seen[1][3] == [seen[1][0], 0]  # the generation config keeps its old EOS as a second stop token


@pytest.mark.parametrize("module", LIBRARIES, ids=lambda m: m.__name__)
def test_non_padding_count_fallback_warns_where_hf_does(module: Any, tmp_path: Path) -> None:
    """HF's test_include_num_input_tokens_seen case 3: no mask, no pad token: all tokens, HF's warning."""
    import io
    import logging

    from tests.checkpoint.gpt2_runs import lm_args, lm_rows, tiny_gpt2
    from tests.parity.scripts.hf_style import local_tokenizer

    tokenizer = local_tokenizer()
    tokenizer.pad_token = None
    args = lm_args(module, str(tmp_path), max_steps=1, include_num_input_tokens_seen="non_padding")
    rows = lm_rows(8)
    collate = transformers.default_data_collator  # HF's default would pad, which needs a pad token
    trainer = module.Trainer(
        model=tiny_gpt2(), args=args, train_dataset=rows, processing_class=tokenizer, data_collator=collate
    )
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    hf_logger = logging.getLogger("transformers.trainer")
    hf_logger.addHandler(handler)
    try:
        trainer.train()
    finally:
        hf_logger.removeHandler(handler)
    assert "Could not determine method to count non-padding tokens" in stream.getvalue()
    assert trainer.state.num_input_tokens_seen == 8 * 12  # one step of two micro-batches of 4 rows


@pytest.mark.parametrize("module", LIBRARIES, ids=lambda m: m.__name__)
def test_untrainable_quantized_models_are_refused_when_built(module: Any, tmp_path: Path) -> None:
    """HF's test_bnb_compile, offline: a compiled 4-bit PEFT model, or one without adapters, is refused."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path / "tiny")

    def quantized() -> Any:
        quantization = BitsAndBytesConfig(load_in_4bit=True)
        return AutoModelForCausalLM.from_pretrained(tmp_path / "tiny", quantization_config=quantization)

    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    args = module.TrainingArguments(str(tmp_path / "out"), report_to="none", use_cpu=True)
    with pytest.raises(ValueError, match=r"torch\.compile"):
        module.Trainer(torch.compile(get_peft_model(quantized(), lora)), args)
    with pytest.raises(ValueError, match=r"adapters"):
        module.Trainer(quantized(), args)
    module.Trainer(get_peft_model(quantized(), lora), args)  # adapters on top: accepted
