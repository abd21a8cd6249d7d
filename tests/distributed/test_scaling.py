"""``fsdp``/``fsdp_config``, ``deepspeed`` and ``ddp_*`` become accelerate plugins as in transformers 5.24.

accelerate enables FSDP only with several GPUs and DeepSpeed is an optional install, so on CPU these
tests check the plugins built from the arguments (against transformers' own translation where it has
one), the refusals, and that a single CPU process still trains with ``fsdp`` set, with a warning.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from accelerate.utils import FullyShardedDataParallelPlugin

from statetrain import Trainer, TrainingArguments
from statetrain.args import optional_packages
from statetrain.args.support import check_supported_arguments
from statetrain.distributed import plugins as scaling
from tests.helpers import TinyRegressor, regression_rows

FSDP_CASES: list[tuple[Any, dict[str, Any] | None]] = [
    (True, None),
    ("full_shard offload auto_wrap", {"fsdp_transformer_layer_cls_to_wrap": "Block"}),
    (["shard_grad_op"], {"auto_wrap_policy": "SIZE_BASED_WRAP", "min_num_params": 1000}),
    (True, {"version": 1, "backward_prefetch": "backward_pre", "limit_all_gathers": "true", "cpu_offload": True}),
    ("hybrid_shard", {"version": 1, "activation_checkpointing": True, "cpu_ram_efficient_loading": "true"}),
    (True, {"reshard_after_forward": False, "transformer_layer_cls_to_wrap": ["A", "B"]}),
]


def args(tmp_path: Path, **options: Any) -> TrainingArguments:
    return TrainingArguments(str(tmp_path), use_cpu=True, disable_tqdm=True, report_to="none", **options)


@pytest.mark.parametrize(("fsdp", "fsdp_config"), FSDP_CASES)
def test_fsdp_plugin_arguments_match_transformers(tmp_path: Path, fsdp: Any, fsdp_config: Any) -> None:
    import transformers

    theirs = transformers.TrainingArguments(str(tmp_path), fsdp=fsdp, fsdp_config=json.loads(json.dumps(fsdp_config)))
    ours = scaling.fsdp_plugin_kwargs(args(tmp_path, fsdp=fsdp, fsdp_config=fsdp_config))
    assert ours == theirs.fsdp_plugin_args


def test_fsdp_plugin_is_built_from_the_arguments(tmp_path: Path) -> None:
    config = tmp_path / "fsdp.json"
    config.write_text(json.dumps({"fsdp_transformer_layer_cls_to_wrap": "Block", "reshard_after_forward": False}))
    plugin = scaling.build_fsdp_plugin(args(tmp_path, fsdp="full_shard offload", fsdp_config=str(config)))
    assert isinstance(plugin, FullyShardedDataParallelPlugin)
    assert plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is False  # the config wins over the legacy word, as in HF
    assert plugin.transformer_cls_names_to_wrap == ["Block"]
    assert type(plugin.cpu_offload).__name__ == "CPUOffloadPolicy"
    assert "FULL_STATE_DICT" in str(plugin.state_dict_type)
    assert scaling.build_fsdp_plugin(args(tmp_path)) is None


def test_fsdp_refusals_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(NotImplementedError, match="state_dict_type"):
        scaling.fsdp_plugin_kwargs(args(tmp_path, fsdp=True, fsdp_config={"state_dict_type": "SHARDED_STATE_DICT"}))
    with pytest.raises(NotImplementedError, match="xla"):
        scaling.fsdp_plugin_kwargs(args(tmp_path, fsdp=True, fsdp_config={"xla": True}))
    with pytest.raises(ValueError, match="only in FSDP1"):
        scaling.fsdp_plugin_kwargs(args(tmp_path, fsdp="hybrid_shard"))
    with pytest.raises(ValueError, match="auto_wrap_policy"):
        scaling.fsdp_plugin_kwargs(args(tmp_path, fsdp=True, fsdp_config={"auto_wrap_policy": "EVERYTHING"}))
    with pytest.raises(ValueError, match="neither a dict"):
        scaling.fsdp_plugin_kwargs(args(tmp_path, fsdp=True, fsdp_config=str(tmp_path / "missing.json")))


def test_fsdp_on_one_cpu_process_trains_and_says_it_is_not_sharded(tmp_path: Path) -> None:
    training = args(tmp_path, fsdp=True, max_steps=2, per_device_train_batch_size=4, save_strategy="no")
    check_supported_arguments(training)  # no longer refused by name
    with pytest.warns(UserWarning, match="the model is not sharded"):
        trainer = Trainer(model=TinyRegressor(), args=training, train_dataset=regression_rows(16))
    assert trainer.train().global_step == 2


def deepspeed_arguments(tmp_path: Path, **config: Any) -> TrainingArguments:
    ds = {
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "zero_optimization": {"stage": 2},
        **config,
    }
    options = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, "bf16": True, "save_strategy": "no"}
    return args(tmp_path, deepspeed=ds, **options)


def test_deepspeed_auto_values_are_filled_from_the_arguments(tmp_path: Path) -> None:
    config = scaling.deepspeed_config(deepspeed_arguments(tmp_path))
    assert config is not None
    assert config["train_micro_batch_size_per_gpu"] == 4
    assert config["gradient_accumulation_steps"] == 2
    assert config["train_batch_size"] == 8  # one process
    assert config["gradient_clipping"] == 1.0
    assert config["bf16"] == {"enabled": True}
    assert config["zero_optimization"] == {"stage": 2}


def test_deepspeed_values_that_contradict_the_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"train_micro_batch_size_per_gpu=16 vs TrainingArguments per_device"):
        scaling.deepspeed_config(deepspeed_arguments(tmp_path, train_micro_batch_size_per_gpu=16))
    with pytest.raises(NotImplementedError, match="'optimizer' section"):
        scaling.deepspeed_config(deepspeed_arguments(tmp_path, optimizer={"type": "AdamW"}))


def test_deepspeed_zero3_with_load_best_model_is_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(optional_packages, "deepspeed_available", lambda: True)
    training = deepspeed_arguments(tmp_path, zero_optimization={"stage": 3})
    training.load_best_model_at_end = True
    with pytest.raises(NotImplementedError, match=r"zero_optimization\.stage=3 and load_best_model_at_end"):
        scaling.build_deepspeed_plugin(training)


def test_deepspeed_with_use_cpu_is_refused_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """accelerate silently drops DeepSpeed when its CPU switch is on; statetrain says so instead."""
    monkeypatch.setattr(optional_packages, "deepspeed_available", lambda: True)
    with pytest.raises(ValueError, match=r"TrainingArguments\.deepspeed cannot run with use_cpu=True"):
        scaling.build_deepspeed_plugin(deepspeed_arguments(tmp_path))


def test_deepspeed_dtype_follows_the_config() -> None:
    assert scaling.deepspeed_dtype({"bf16": {"enabled": True}}) == torch.bfloat16
    assert scaling.deepspeed_dtype({"fp16": {"enabled": "true"}, "bf16": {"enabled": False}}) == torch.float16
    assert scaling.deepspeed_dtype({"zero_optimization": {"stage": 2}}) == torch.float32


def test_missing_deepspeed_package_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(optional_packages, "deepspeed_available", lambda: False)
    with pytest.raises(ImportError, match=r"TrainingArguments\.deepspeed .* 'deepspeed' package"):
        Trainer(model=TinyRegressor(), args=deepspeed_arguments(tmp_path), train_dataset=regression_rows(8))


class FakePreTrainedModel(torch.nn.Module):
    """Stands for a transformers model: HF keys its default on the class name in the MRO."""

    is_activation_checkpointing = False


class PreTrainedModel(FakePreTrainedModel):
    pass


def test_ddp_options_follow_transformers(tmp_path: Path) -> None:
    assert scaling.ddp_kwargs(args(tmp_path), TinyRegressor()) == {"find_unused_parameters": True}
    model = PreTrainedModel()
    assert scaling.ddp_kwargs(args(tmp_path), model) == {"find_unused_parameters": True}
    model.is_activation_checkpointing = True
    assert scaling.ddp_kwargs(args(tmp_path), model) == {"find_unused_parameters": False}
    options = {"ddp_bucket_cap_mb": 5, "ddp_broadcast_buffers": False, "ddp_static_graph": True}
    chosen = args(tmp_path, ddp_find_unused_parameters=False, **options)
    expected = {"find_unused_parameters": False, "bucket_cap_mb": 5, "broadcast_buffers": False, "static_graph": True}
    assert scaling.ddp_kwargs(chosen, TinyRegressor()) == expected
    trainer = Trainer(model=TinyRegressor(), args=chosen, train_dataset=regression_rows(8))
    scaling.configure_ddp(trainer.accelerator, chosen, trainer.model)
    handler = trainer.accelerator.ddp_handler
    assert {key: getattr(handler, key) for key in expected} == expected
