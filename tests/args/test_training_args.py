"""TrainingArguments: HF 5.24 names, defaults and derivations; pydantic errors that name the field."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statetrain.args.accelerator_config import AcceleratorConfig
from statetrain.args.enums import IntervalStrategy, OptimizerNames, ParallelMode, SaveStrategy
from statetrain.args.training_args import TrainingArguments

transformers = pytest.importorskip("transformers")
HFArgs = transformers.TrainingArguments

# Our to_dict matches HF's on shared keys except for this HF quirk: its device setup pops
# use_configured_state out of the AcceleratorConfig it later serialises.
HF_POPPED_ACCELERATOR_KEY = "use_configured_state"


def build_both(**kwargs: Any) -> tuple[TrainingArguments, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TrainingArguments(**kwargs), HFArgs(**kwargs)


def shared_dict_differences(ours: TrainingArguments, theirs: Any) -> dict[str, tuple[Any, Any]]:
    """Keys both to_dict()s have whose values differ, ignoring HF's popped accelerator key."""
    mine, hf = ours.to_dict(), theirs.to_dict()
    mine["accelerator_config"].pop(HF_POPPED_ACCELERATOR_KEY)
    hf["accelerator_config"].pop(HF_POPPED_ACCELERATOR_KEY, None)
    return {k: (mine[k], hf[k]) for k in mine.keys() & hf.keys() if mine[k] != hf[k]}


# ---------------------------------------------------------------------------- fields and defaults


def test_every_hf_field_exists_with_output_dir_first() -> None:
    ours = [f.name for f in dataclasses.fields(TrainingArguments)]
    hf = {f.name for f in dataclasses.fields(HFArgs) if f.init}
    assert ours[0] == "output_dir"
    assert hf - set(ours) == set()


def declared_default(f: dataclasses.Field[Any]) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc,operator]


def test_declared_defaults_equal_hf_declared_defaults() -> None:
    hf_fields = {f.name: f for f in dataclasses.fields(HFArgs)}
    differing = {}
    for f in dataclasses.fields(TrainingArguments):
        if f.name not in hf_fields:
            continue
        ours, theirs = declared_default(f), declared_default(hf_fields[f.name])
        if ours != theirs:
            differing[f.name] = (ours, theirs)
    assert differing == {}


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"output_dir": "out", "eval_strategy": "steps", "logging_steps": 50, "learning_rate": 1e-3},
        {"eval_strategy": "epoch", "save_strategy": "epoch", "load_best_model_at_end": True},
        {"lr_scheduler_type": "reduce_lr_on_plateau", "eval_strategy": "epoch", "metric_for_best_model": "acc"},
        {"torch_compile_mode": "reduce-overhead", "use_cpu": True, "report_to": "tensorboard"},
        {"include_num_input_tokens_seen": True, "debug": "underflow_overflow", "hub_token": "secret"},
        {"warmup_steps": 0.1, "logging_steps": 0.05, "eval_strategy": "steps", "save_steps": 0.1},
        {"accelerator_config": {"split_batches": True}, "lr_scheduler_kwargs": '{"num_cycles": "2"}'},
        {"gradient_checkpointing": True, "report_to": ["wandb", "mlflow"], "seed": 7},
    ],
)
def test_to_dict_matches_hf_on_shared_keys(kwargs: dict[str, Any]) -> None:
    ours, theirs = build_both(**kwargs)
    assert shared_dict_differences(ours, theirs) == {}


def test_to_dict_is_json_with_enum_values_and_masked_token() -> None:
    args = TrainingArguments(eval_strategy="epoch", hub_token="secret")
    loaded = json.loads(args.to_json_string())
    assert loaded["eval_strategy"] == "epoch" and type(loaded["eval_strategy"]) is str
    assert loaded["hub_token"] == "<HUB_TOKEN>"
    assert "evaluation_strategy" not in loaded and "no_cuda" not in loaded
    assert "secret" not in repr(args) and "learning_rate=5e-05," in str(args)


def test_to_dict_round_trips_through_the_constructor_without_warnings() -> None:
    args = TrainingArguments(
        "rt", eval_strategy="steps", eval_steps=0.1, save_steps=0.2, load_best_model_at_end=True,
        debug="underflow_overflow", accelerator_config={"even_batches": False}, report_to="wandb",
        activation_checkpointing=True, lr_scheduler_kwargs={"num_cycles": 2},
    )  # fmt: skip
    data = args.to_dict()
    data.pop("hub_token")  # masked, as HF masks it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert TrainingArguments(**data) == args


def test_output_dir_positional_default_and_pathlike(tmp_path: Path) -> None:
    assert TrainingArguments("out").output_dir == "out"
    assert TrainingArguments().output_dir == "trainer_output"
    assert TrainingArguments(tmp_path).output_dir == str(tmp_path)  # type: ignore[arg-type]
    assert TrainingArguments("~/runs").output_dir == os.path.expanduser("~/runs")


def test_fields_stay_mutable_after_construction() -> None:
    args = TrainingArguments()
    args.learning_rate = 1e-3
    assert args.learning_rate == 1e-3


# ---------------------------------------------------------------------------- HfArgumentParser


def test_hf_argument_parser_builds_ours_like_hf() -> None:
    cli = [
        "--output_dir", "cli_out", "--eval_strategy", "steps", "--eval_steps", "10", "--learning_rate", "1e-3",
        "--no_remove_unused_columns", "--activation_checkpointing", "--include_for_metrics", "inputs", "loss",
        "--lr_scheduler_kwargs", '{"num_cycles": "2"}', "--debug", "underflow_overflow", "--optim", "sgd",
    ]  # fmt: skip
    (ours,) = transformers.HfArgumentParser(TrainingArguments).parse_args_into_dataclasses(
        cli, look_for_args_file=False
    )
    (theirs,) = transformers.HfArgumentParser(HFArgs).parse_args_into_dataclasses(cli, look_for_args_file=False)
    assert isinstance(ours, TrainingArguments)
    assert ours.eval_steps == 10 and ours.optim == OptimizerNames.SGD and ours.remove_unused_columns is False
    assert shared_dict_differences(ours, theirs) == {}


def test_hf_argument_parser_without_flags_gives_defaults_and_accepts_old_names() -> None:
    parser = transformers.HfArgumentParser(TrainingArguments)
    (plain,) = parser.parse_args_into_dataclasses([], look_for_args_file=False)
    assert plain.non_default_fields() == {}
    with pytest.warns(FutureWarning, match="evaluation_strategy"):
        (old,) = parser.parse_args_into_dataclasses(["--evaluation_strategy", "epoch"], look_for_args_file=False)
    assert old.eval_strategy == "epoch"


def test_subclass_built_after_parsing_keeps_declared_types() -> None:
    from pydantic.dataclasses import dataclass

    transformers.HfArgumentParser(TrainingArguments)  # rewrites Field.type on the class, as on HF's
    assert dataclasses.fields(TrainingArguments)[0].type is str  # the stripped type is in place now

    @dataclass
    class MyArgs(TrainingArguments):
        extra: int = 1

    assert MyArgs(eval_steps=None).extra == 1  # Optional survived
    with pytest.raises(ValueError, match="per_device_train_batch_size"):
        MyArgs(per_device_train_batch_size=0)  # the Annotated bound survived


# ---------------------------------------------------------------------------- validation errors


def test_unknown_argument_names_the_closest_field() -> None:
    with pytest.raises(ValueError) as caught:
        TrainingArguments(learnig_rate=1e-3)  # type: ignore[call-arg]
    assert "learnig_rate" in str(caught.value) and "'learning_rate'" in str(caught.value)


def test_unknown_argument_without_a_close_match_still_names_it() -> None:
    with pytest.raises(ValueError, match="zzz_qqq") as caught:
        TrainingArguments(zzz_qqq=1)  # type: ignore[call-arg]
    assert "did you mean" not in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("eval_strategy", "sometimes", "['no', 'steps', 'epoch']"),
        ("optim", "adamw_torch_fuse", "did you mean 'adamw_torch_fused'"),
        ("save_strategy", "often", "'best'"),
        ("log_level", "loud", "'passive'"),
        ("train_sampling_strategy", "shuffled", "'group_by_length'"),
        ("lr_scheduler_type", "cosinus", "'cosine'"),
    ],
)
def test_invalid_choice_names_field_and_choices(field: str, value: Any, allowed: str) -> None:
    with pytest.raises(ValueError) as caught:
        TrainingArguments(**{field: value})
    assert field in str(caught.value) and allowed in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("per_device_train_batch_size", "eight"),
        ("per_device_train_batch_size", 0),
        ("gradient_accumulation_steps", 2.5),
        ("learning_rate", -1.0),
        ("adam_beta1", 1.0),
        ("fp16", "maybe"),
        ("label_names", "labels"),
        ("fsdp", "full_shard bogus"),
    ],
)
def test_wrong_types_and_bounds_fail_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        TrainingArguments(**{field: value})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fp16": True, "bf16": True, "use_cpu": True},
        {"logging_steps": 0},
        {"logging_steps": 10.5},
        {"eval_strategy": "steps", "logging_steps": 0, "logging_strategy": "no"},
        {"lr_scheduler_type": "reduce_lr_on_plateau"},
        {"dataloader_prefetch_factor": 2},
        {"eval_strategy": "steps", "save_strategy": "epoch", "load_best_model_at_end": True},
        {"eval_strategy": "steps", "eval_steps": 100, "save_steps": 250, "load_best_model_at_end": True},
        {"eval_strategy": "steps", "eval_steps": 0.1, "save_steps": 0.25, "load_best_model_at_end": True},
        {"eval_strategy": "steps", "eval_steps": 0.1, "save_steps": 500, "load_best_model_at_end": True},
    ],
)
def test_cross_field_errors_where_hf_also_refuses(kwargs: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError):
            HFArgs(**kwargs)
        with pytest.raises(ValueError):
            TrainingArguments(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"eval_strategy": "steps", "eval_steps": 100, "save_steps": 500, "load_best_model_at_end": True},
        {"eval_strategy": "steps", "eval_steps": 0.1, "save_steps": 0.2, "load_best_model_at_end": True},
        {"eval_strategy": "steps", "save_strategy": "best", "load_best_model_at_end": True},
        {"logging_steps": 0.5, "save_steps": 0.25},
    ],
)
def test_consistent_combinations_pass_like_hf(kwargs: dict[str, Any]) -> None:
    ours, theirs = build_both(**kwargs)
    assert shared_dict_differences(ours, theirs) == {}


def test_cross_field_error_names_the_fields_and_lists_all_problems() -> None:
    with pytest.raises(ValueError) as caught:
        TrainingArguments(
            fp16=True, bf16=True, save_strategy="epoch", eval_strategy="steps", load_best_model_at_end=True
        )
    message = str(caught.value)
    assert "fp16 and bf16" in message and "save_strategy equal to eval_strategy" in message


def test_save_steps_zero_under_steps_is_refused_unlike_hf() -> None:
    with pytest.raises(ValueError, match="save_steps > 0"):
        TrainingArguments(save_steps=0)


# ---------------------------------------------------------------------------- derived defaults


@pytest.mark.parametrize(
    "kwargs",
    [
        {"eval_strategy": "steps"},
        {"eval_strategy": "steps", "logging_steps": 25},
        {"eval_strategy": "steps", "eval_steps": 0, "logging_steps": 40},
        {"eval_strategy": "steps", "eval_steps": 7},
        {"eval_strategy": "epoch"},
    ],
)
def test_eval_steps_and_do_eval_follow_hf(kwargs: dict[str, Any]) -> None:
    ours, theirs = build_both(**kwargs)
    assert (ours.eval_steps, ours.do_eval) == (theirs.eval_steps, theirs.do_eval)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"eval_strategy": "epoch", "save_strategy": "epoch", "load_best_model_at_end": True},
        {"metric_for_best_model": "accuracy"},
        {"metric_for_best_model": "eval_loss"},
        {"metric_for_best_model": "eval_loss", "greater_is_better": True},
        {"lr_scheduler_type": "reduce_lr_on_plateau", "eval_strategy": "epoch"},
        {"lr_scheduler_type": "greedy", "eval_strategy": "epoch"},
        {},
    ],
)
def test_best_metric_defaults_match_hf(kwargs: dict[str, Any]) -> None:
    ours, theirs = build_both(**kwargs)
    pair = (ours.metric_for_best_model, ours.greater_is_better)
    assert pair == (theirs.metric_for_best_model, theirs.greater_is_better)


@pytest.mark.parametrize(
    ("given", "expected"),
    [("none", []), (None, []), ("wandb", ["wandb"]), (["wandb", "tensorboard"], ["wandb", "tensorboard"])],
)
def test_report_to_becomes_a_list(given: Any, expected: list[str]) -> None:
    assert TrainingArguments(report_to=given).report_to == expected


def test_report_to_all_is_kept_for_the_trainer_to_resolve() -> None:
    assert TrainingArguments(report_to="all").report_to == ["all"]


@given(
    warmup=st.one_of(st.integers(0, 10_000), st.floats(0, 0.999, allow_nan=False), st.floats(1, 1e4)),
    total=st.integers(0, 100_000),
)
def test_get_warmup_steps_equals_hf(warmup: float, total: int) -> None:
    args = TrainingArguments()
    args.warmup_steps = warmup
    assert args.get_warmup_steps(total) == HFArgs.get_warmup_steps(SimpleNamespace(warmup_steps=warmup), total)


@pytest.mark.parametrize(("warmup", "total", "expected"), [(0, 100, 0), (10, 100, 10), (0.1, 95, 10), (0.5, 3, 2)])
def test_get_warmup_steps_examples(warmup: float, total: int, expected: int) -> None:
    assert TrainingArguments(warmup_steps=warmup).get_warmup_steps(total) == expected


def test_small_normalisations_match_hf() -> None:
    ours, theirs = build_both(include_num_input_tokens_seen=True, use_cpu=True, torch_compile_backend="eager")
    for name in ("include_num_input_tokens_seen", "dataloader_pin_memory", "torch_compile", "torch_compile_backend"):
        assert getattr(ours, name) == getattr(theirs, name), name


def test_enum_fields_compare_with_strings_and_hf_enums() -> None:
    args = TrainingArguments(eval_strategy="steps", save_strategy="best", metric_for_best_model="acc")
    assert args.eval_strategy == "steps" and args.eval_strategy == transformers.IntervalStrategy.STEPS
    assert args.save_strategy == SaveStrategy.BEST and f"{args.save_strategy}" == "best"
    assert ParallelMode.DISTRIBUTED == transformers.training_args.ParallelMode.DISTRIBUTED
    assert ParallelMode.NOT_PARALLEL != transformers.training_args.ParallelMode.DISTRIBUTED
    assert IntervalStrategy("epoch") is IntervalStrategy.EPOCH


# ---------------------------------------------------------------------------- deprecated 4.x names


@pytest.mark.parametrize(
    ("old", "value", "new", "expected"),
    [
        ("evaluation_strategy", "epoch", "eval_strategy", "epoch"),
        ("no_cuda", True, "use_cpu", True),
        ("gradient_checkpointing", True, "activation_checkpointing", True),
        (
            "gradient_checkpointing_kwargs",
            {"use_reentrant": 0},
            "activation_checkpointing_kwargs",
            {"use_reentrant": 0},
        ),
        ("group_by_length", True, "train_sampling_strategy", "group_by_length"),
        ("warmup_ratio", 0.1, "warmup_steps", 0.1),
        ("per_gpu_train_batch_size", 4, "per_device_train_batch_size", 4),
        ("include_inputs_for_metrics", True, "include_for_metrics", ["inputs"]),
    ],
)
def test_old_name_warns_naming_both_and_maps(old: str, value: Any, new: str, expected: Any) -> None:
    kwargs: dict[str, Any] = {old: value}
    with pytest.warns(FutureWarning) as record:
        args = TrainingArguments(**kwargs)
    message = str(record[0].message)
    assert old in message and new in message
    assert record[0].filename == __file__  # attributed to the caller, not to pydantic
    assert getattr(args, new) == expected
    assert old not in args.non_default_fields()


def test_gradient_checkpointing_follows_hf_5_24() -> None:
    with pytest.warns(FutureWarning, match="gradient_checkpointing"):
        ours = TrainingArguments(gradient_checkpointing=True)
    with pytest.warns(FutureWarning, match="gradient_checkpointing"):
        theirs = HFArgs(gradient_checkpointing=True)
    both = [(a.activation_checkpointing, a.gradient_checkpointing) for a in (ours, theirs)]
    assert both[0] == both[1] == (True, True)
    assert TrainingArguments(activation_checkpointing=True).gradient_checkpointing is True


@pytest.mark.parametrize("old", ["overwrite_output_dir", "logging_dir", "save_safetensors", "jit_mode_eval"])
def test_retired_names_warn_and_change_nothing(old: str) -> None:
    kwargs: dict[str, Any] = {old: "runs" if old == "logging_dir" else True}
    with pytest.warns(FutureWarning, match=old):
        args = TrainingArguments(**kwargs)
    assert args.non_default_fields() == {} and getattr(args, old) is None


def test_old_and_new_name_in_conflict_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"evaluation_strategy.*eval_strategy"), pytest.warns(FutureWarning):
        TrainingArguments(evaluation_strategy="epoch", eval_strategy="steps")


def test_warmup_ratio_of_one_cannot_be_expressed() -> None:
    with pytest.raises(ValueError, match="warmup_steps"), pytest.warns(FutureWarning):
        TrainingArguments(warmup_ratio=1.0)


# ---------------------------------------------------------------------------- non_default_fields


def test_non_default_fields_reports_changes_and_derivations() -> None:
    assert TrainingArguments().non_default_fields() == {}
    args = TrainingArguments(learning_rate=1e-3, eval_strategy="steps")
    assert args.non_default_fields() == {
        "learning_rate": 1e-3,
        "eval_strategy": IntervalStrategy.STEPS,
        "eval_steps": 500,
        "do_eval": True,
    }
    args.seed = 1
    assert args.non_default_fields()["seed"] == 1


def test_non_default_fields_shows_old_name_under_new_name() -> None:
    with pytest.warns(FutureWarning):
        args = TrainingArguments(no_cuda=True)
    assert args.non_default_fields() == {"use_cpu": True, "dataloader_pin_memory": False}


# ---------------------------------------------------------------------------- accelerator_config


def test_accelerator_config_defaults_match_hf() -> None:
    from transformers.trainer_pt_utils import AcceleratorConfig as HFAcceleratorConfig

    config = TrainingArguments().accelerator_config
    assert isinstance(config, AcceleratorConfig)
    assert config.to_dict() == dataclasses.asdict(HFAcceleratorConfig())


def test_accelerator_config_accepts_dict_object_file_and_hf_object(tmp_path: Path) -> None:
    from transformers.trainer_pt_utils import AcceleratorConfig as HFAcceleratorConfig

    path = tmp_path / "accel.json"
    path.write_text(json.dumps({"even_batches": False}))
    given: list[Any] = [
        {"even_batches": False},
        AcceleratorConfig(even_batches=False),
        str(path),
        json.dumps({"even_batches": False}),
        HFAcceleratorConfig(even_batches=False),
    ]
    for value in given:
        config = TrainingArguments(accelerator_config=value).accelerator_config
        assert isinstance(config, AcceleratorConfig) and config.even_batches is False, value


@pytest.mark.parametrize(
    ("value", "needle"),
    [({"split_batchs": True}, "'split_batches'"), (AcceleratorConfig, "instance"), (3, "accelerator_config")],
)
def test_accelerator_config_errors_name_the_problem(value: Any, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        TrainingArguments(accelerator_config=value)


# ---------------------------------------------------------------------------- device and processes


def test_construction_does_not_touch_accelerate_state() -> None:
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(reset_partial_state=True)
    args = TrainingArguments(use_cpu=True)
    assert PartialState._shared_state == {}
    assert args.world_size == 1
    assert PartialState._shared_state != {}


def test_single_process_facts() -> None:
    args = TrainingArguments(use_cpu=True, per_device_train_batch_size=4, per_device_eval_batch_size=3)
    assert args.device.type == "cpu" and args.n_gpu == 0
    assert (args.world_size, args.process_index, args.local_process_index) == (1, 0, 0)
    assert args.parallel_mode == ParallelMode.NOT_PARALLEL
    assert (args.train_batch_size, args.eval_batch_size) == (4, 3)
    assert args.should_log and args.should_save
    assert args.to_sanitized_dict()["train_batch_size"] == 4
    with args.main_process_first(desc="noop"):
        pass


def test_process_log_level_follows_hf_rules() -> None:
    assert TrainingArguments(use_cpu=True, log_level="error").get_process_log_level() == 40
    import logging

    current = logging.getLogger("statetrain").getEffectiveLevel()
    assert TrainingArguments(use_cpu=True).get_process_log_level() == current


def test_pickle_and_deepcopy_drop_the_process_state() -> None:
    args = TrainingArguments(use_cpu=True, learning_rate=2e-4)
    assert args.device.type == "cpu"
    for clone in (pickle.loads(pickle.dumps(args)), copy.deepcopy(args)):
        assert clone == args and "_runtime_info" not in vars(clone)
    assert dataclasses.replace(args, seed=3).non_default_fields() == {
        "learning_rate": 2e-4,
        "seed": 3,
        "use_cpu": True,
        "dataloader_pin_memory": False,
    }


@pytest.mark.slow
def test_two_launched_cpu_processes_join_without_use_cpu(tmp_path: Path) -> None:
    """transformers 5.24 leaves each launched process alone on a CPU-only machine; we must not.

    The two processes get the environment torchrun would give them (without torchrun's own start-up).
    """
    script = tmp_path / "probe.py"
    script.write_text(
        textwrap.dedent(
            """
            import json
            from statetrain.args.training_args import TrainingArguments
            args = TrainingArguments(ddp_timeout=60)
            print(json.dumps([args.world_size, args.process_index, str(args.parallel_mode)]), flush=True)
            """
        )
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = str(Path(__file__).resolve().parents[2])
    base = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": "2",
        "LOCAL_WORLD_SIZE": "2",
    }
    ranks = [
        subprocess.Popen(
            [sys.executable, str(script)],
            env={**base, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = [process.communicate(timeout=120) for process in ranks]
    assert [process.returncode for process in ranks] == [0, 0], [err[-2000:] for _, err in outputs]
    seen = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert seen == [[2, 0, "distributed"], [2, 1, "distributed"]]
