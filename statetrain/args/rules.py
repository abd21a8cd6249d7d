"""What ``TrainingArguments.__post_init__`` does after pydantic has checked each field alone.

Four steps, in transformers 5.24's order: read JSON strings given for dict fields, fold the
transformers 4.x names into their 5.x fields (with a ``FutureWarning``), derive the defaults that
depend on other fields, then check the fields against each other. Every problem found by the last
step is reported at once, each naming its fields and the fix.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from statetrain.args.accelerator_config import AcceleratorConfig
from statetrain.args.enums import DebugOption, IntervalStrategy, SaveStrategy, SchedulerType

if TYPE_CHECKING:
    from statetrain.args.training_args import TrainingArguments

# Fields whose command-line form is a JSON object string.
JSON_DICT_FIELDS = (
    "accelerator_config",
    "fsdp_config",
    "deepspeed",
    "activation_checkpointing_kwargs",
    "gradient_checkpointing_kwargs",
    "lr_scheduler_kwargs",
)

# transformers 5.24 keeps these 4.x names as fields that mirror the new ones.
MIRRORED_NAMES: dict[str, str] = {
    "gradient_checkpointing": "activation_checkpointing",
    "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs",
}


class _NoChange:
    """Marks a deprecated flag given as False: it asks for nothing."""


_NO_CHANGE = _NoChange()


def _flag_to(new_value: Any) -> Callable[[Any], Any]:
    return lambda given: new_value if given else _NO_CHANGE


def _ratio_to_warmup_steps(ratio: float) -> float:
    if ratio >= 1:
        raise ValueError(
            f"warmup_ratio={ratio} cannot be carried over: in transformers 5 a warmup_steps below 1 is the "
            "ratio, so a whole-run warm-up needs warmup_steps=<total optimizer steps>"
        )
    return ratio


def _same(given: Any) -> Any:
    return given


# 4.x name -> (5.x field, how the old value maps onto it, how to write it now).
RENAMED_NAMES: dict[str, tuple[str, Callable[[Any], Any], str]] = {
    "evaluation_strategy": ("eval_strategy", _same, "eval_strategy"),
    "no_cuda": ("use_cpu", _flag_to(True), "use_cpu=True"),
    "per_gpu_train_batch_size": ("per_device_train_batch_size", _same, "per_device_train_batch_size"),
    "per_gpu_eval_batch_size": ("per_device_eval_batch_size", _same, "per_device_eval_batch_size"),
    "warmup_ratio": ("warmup_steps", _ratio_to_warmup_steps, "warmup_steps=<ratio below 1>"),
    "group_by_length": (
        "train_sampling_strategy",
        _flag_to("group_by_length"),
        "train_sampling_strategy='group_by_length'",
    ),
    "include_inputs_for_metrics": (
        "include_for_metrics",
        _flag_to("inputs"),
        "include_for_metrics=['inputs']",
    ),
}

# 4.x names transformers 5 dropped without a replacement field: accepted, warned about, ignored.
RETIRED_NAMES: dict[str, str] = {
    "overwrite_output_dir": "it has no effect; remove it",
    "logging_dir": "set the TENSORBOARD_LOGGING_DIR environment variable instead",
    "save_safetensors": "checkpoints are always written as safetensors",
    "jit_mode_eval": "it has no effect; remove it",
    "use_mps_device": "MPS is used automatically when present unless use_cpu=True",
}

# Every 4.x name, and the ones that are no field of transformers 5.24 (left out of to_dict).
RETIRED_OR_RENAMED: frozenset[str] = frozenset(RENAMED_NAMES) | frozenset(RETIRED_NAMES)
DEPRECATED_NAMES: frozenset[str] = RETIRED_OR_RENAMED | frozenset(MIRRORED_NAMES)

ALLOWABLE_CHANGES = ("per_device_train_batch_size", "gradient_accumulation_steps", "dataset_length")
"""What ``resume_allow_changed`` may name."""


_INTERNAL_MODULES = ("statetrain.args.", "pydantic.", "pydantic_core", "dataclasses")
_TOKEN_COUNTING = ("all", "non_padding", "no")
_METRIC_INPUTS = ("inputs", "loss")
_METRIC_DRIVEN_SCHEDULERS = (SchedulerType.REDUCE_ON_PLATEAU, SchedulerType.GREEDY)


def finalize(args: TrainingArguments) -> None:
    """Run the post-init steps on freshly validated arguments; raise ValueError listing every problem."""
    _parse_json_dict_fields(args)
    fold_deprecated_names(args)
    _derive_defaults(args)
    problems = find_problems(args)
    if problems:
        raise ValueError("invalid TrainingArguments:\n- " + "\n- ".join(problems))


def _warn_deprecated(message: str) -> None:
    """Emit a FutureWarning attributed to the first caller outside statetrain and pydantic."""
    frame = sys._getframe(1)
    level = 2
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(_INTERNAL_MODULES):
        frame = frame.f_back
        level += 1
    warnings.warn(message, FutureWarning, stacklevel=level)


def _cli_scalar(value: Any) -> Any:
    """Turn the string forms a shell produces ('true', '3', '0.5') into bool/int/float, recursively."""
    if isinstance(value, dict):
        return {key: _cli_scalar(item) for key, item in value.items()}
    if not isinstance(value, str):
        return value
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    if value.isdigit():
        return int(value)
    if value.replace(".", "", 1).isdigit():
        return float(value)
    return value


def _parse_json_dict_fields(args: TrainingArguments) -> None:
    """A dict field given as a string starting with '{' is JSON; any other string stays a file path."""
    for name in JSON_DICT_FIELDS:
        value = getattr(args, name)
        if not (isinstance(value, str) and value.lstrip().startswith("{")):
            continue
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{name} looks like a JSON object but does not parse: {exc}") from exc
        setattr(args, name, _cli_scalar(parsed))


def declared_defaults(cls: type) -> dict[str, Any]:
    """Each field's declared default (default factories called), by name."""
    defaults: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory()
    return defaults


def fold_deprecated_names(args: TrainingArguments) -> None:
    """Carry each 4.x name given into its 5.x field, warning once per name; then clear the old name.

    An old name only fills a new field still at its default; both given with different values is
    an error. ``gradient_checkpointing*`` follow transformers 5.24 exactly: they fill the new field
    when it is unset and then mirror it.
    """
    for old, new in MIRRORED_NAMES.items():
        if getattr(args, new) is None and getattr(args, old) is not None:
            _warn_deprecated(f"`{old}` is deprecated (to be removed in transformers v6); use `{new}` instead.")
            setattr(args, new, getattr(args, old))
        setattr(args, old, getattr(args, new))
    if args.activation_checkpointing is None:
        args.activation_checkpointing = args.gradient_checkpointing = False

    defaults = declared_defaults(type(args))
    for old, (new, translate, spelling) in RENAMED_NAMES.items():
        given = getattr(args, old)
        if given is None:
            continue
        _warn_deprecated(f"`{old}` is deprecated (removed in transformers 5); use `{spelling}` instead.")
        wanted = translate(given)
        setattr(args, old, None)
        if wanted is _NO_CHANGE:
            continue
        current = getattr(args, new)
        if new == "include_for_metrics":
            if wanted not in current:
                setattr(args, new, [*current, wanted])
        elif current == defaults.get(new):
            setattr(args, new, wanted)
        elif current != wanted:
            raise ValueError(f"both `{old}`={given!r} and `{new}`={current!r} are given; keep only `{new}`")

    for old, advice in RETIRED_NAMES.items():
        if getattr(args, old) is not None:
            _warn_deprecated(f"`{old}` was removed in transformers 5 and is ignored: {advice}.")
            setattr(args, old, None)


def _derive_defaults(args: TrainingArguments) -> None:
    """Fill the fields whose default depends on other fields or on the environment, as HF does."""
    args.output_dir = os.path.expanduser(args.output_dir if args.output_dir is not None else "trainer_output")
    if args.disable_tqdm is None:
        args.disable_tqdm = logging.getLogger("statetrain").getEffectiveLevel() > logging.WARNING
    if isinstance(args.include_num_input_tokens_seen, bool):
        args.include_num_input_tokens_seen = "all" if args.include_num_input_tokens_seen else "no"
    if isinstance(args.debug, str):
        try:
            args.debug = [DebugOption(word) for word in args.debug.split()]
        except ValueError as exc:
            raise ValueError(f"debug: {exc}") from exc

    if not args.do_eval and args.eval_strategy != IntervalStrategy.NO:
        args.do_eval = True
    if args.eval_strategy == IntervalStrategy.STEPS and not args.eval_steps and args.logging_steps > 0:
        args.eval_steps = args.logging_steps

    needs_metric = args.load_best_model_at_end or args.lr_scheduler_type in _METRIC_DRIVEN_SCHEDULERS
    if args.metric_for_best_model is None and needs_metric:
        args.metric_for_best_model = "loss"
    if args.greater_is_better is None and args.metric_for_best_model is not None:
        args.greater_is_better = not args.metric_for_best_model.endswith("loss")

    # "all" stays a marker: which integrations exist is the Trainer's knowledge, not the arguments'.
    if args.report_to is None or args.report_to in ("none", ["none"]):
        args.report_to = []
    elif isinstance(args.report_to, str):
        args.report_to = [args.report_to]
    if args.report_to != ["all"] and kubeflow_available() and "kubeflow" not in args.report_to:
        args.report_to = [*args.report_to, "kubeflow"]  # HF: inside a Kubeflow TrainJob, always report to it

    if args.torch_compile_mode is not None or args.torch_compile_backend is not None:
        args.torch_compile = True
    if args.torch_compile and args.torch_compile_backend is None:
        args.torch_compile_backend = "inductor"

    args.accelerator_config = AcceleratorConfig.coerce(args.accelerator_config)
    if args.use_cpu:
        args.dataloader_pin_memory = False


def _steps_problems(args: TrainingArguments) -> list[str]:
    """Cadence fields under a 'steps' strategy: positive, and whole numbers when above 1."""
    problems: list[str] = []
    for strategy_name, steps_name in (
        ("logging_strategy", "logging_steps"),
        ("eval_strategy", "eval_steps"),
        ("save_strategy", "save_steps"),
    ):
        if getattr(args, strategy_name) != IntervalStrategy.STEPS:
            continue
        steps = getattr(args, steps_name)
        if steps is None or steps <= 0:
            fallback = " (unset, it copies logging_steps, which must then be > 0)" if steps_name == "eval_steps" else ""
            problems.append(
                f"{strategy_name}='steps' needs {steps_name} > 0: a step count, or a fraction below 1 of the "
                f"total steps{fallback}; got {steps!r}"
            )
        elif steps > 1 and steps != int(steps):
            problems.append(f"{steps_name} must be a whole number when above 1; got {steps}")
        elif steps >= 1:
            setattr(args, steps_name, int(steps))
    return problems


def _best_model_problems(args: TrainingArguments) -> list[str]:
    """``load_best_model_at_end`` needs a checkpoint at every evaluation; 'best' saving needs a metric."""
    problems: list[str] = []
    if args.save_strategy == SaveStrategy.BEST and args.metric_for_best_model is None:
        problems.append(
            "`args.metric_for_best_model` must be provided when using 'best' save_strategy: "
            "save_strategy='best' needs metric_for_best_model, the metric that decides 'best'"
        )
    if not args.load_best_model_at_end or args.save_strategy == SaveStrategy.BEST:
        return problems
    if args.eval_strategy != args.save_strategy:
        problems.append(
            "load_best_model_at_end needs save_strategy equal to eval_strategy (or save_strategy='best'); "
            f"got eval_strategy={str(args.eval_strategy)!r}, save_strategy={str(args.save_strategy)!r}"
        )
        return problems
    save, every = args.save_steps, args.eval_steps
    if args.eval_strategy != IntervalStrategy.STEPS or every is None or every <= 0 or save <= 0:
        return problems
    if (save < 1) != (every < 1):
        problems.append(
            "load_best_model_at_end cannot guarantee a save at each evaluation when one of "
            f"save_steps={save} and eval_steps={every} is a ratio and the other a step count; "
            "give both the same form"
        )
    elif round(save * 1_000_000) % round(every * 1_000_000) != 0:
        problems.append(
            "load_best_model_at_end needs save_steps to be a whole multiple of eval_steps; "
            f"got save_steps={save}, eval_steps={every}"
        )
    return problems


def find_problems(args: TrainingArguments) -> list[str]:
    """Every inconsistency between fields, as one message each (normalising step counts on the way)."""
    problems = _steps_problems(args) + _best_model_problems(args)
    problems += check_allow_changed(getattr(args, "resume_allow_changed", None))
    if args.fp16 and args.bf16:
        problems.append("fp16 and bf16 are both True; choose one")
    if args.fp16_full_eval and args.bf16_full_eval:
        problems.append("fp16_full_eval and bf16_full_eval are both True; choose one")
    if args.lr_scheduler_type in _METRIC_DRIVEN_SCHEDULERS and args.eval_strategy == IntervalStrategy.NO:
        problems.append(
            f"lr_scheduler_type={str(args.lr_scheduler_type)!r} steps on evaluation results, so "
            "eval_strategy must not be 'no'"
        )
    if args.dataloader_prefetch_factor is not None and args.dataloader_num_workers == 0:
        problems.append("dataloader_prefetch_factor only applies with dataloader_num_workers > 0")
    if args.include_num_input_tokens_seen not in _TOKEN_COUNTING:
        problems.append(
            f"include_num_input_tokens_seen must be one of {list(_TOKEN_COUNTING)} or a bool; "
            f"got {args.include_num_input_tokens_seen!r}"
        )
    extra = [item for item in args.include_for_metrics if item not in _METRIC_INPUTS]
    if extra:
        problems.append(f"include_for_metrics accepts {list(_METRIC_INPUTS)}; got {extra}")
    return problems


def check_allow_changed(value: Any) -> list[str]:
    """Problems with ``resume_allow_changed`` (for ``TrainingArguments``), one message each."""
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Iterable):
        return [f"resume_allow_changed must be a list of names from {list(ALLOWABLE_CHANGES)}, got {value!r}"]
    problems = []
    for name in value:
        if name == "world_size":
            problems.append(
                "resume_allow_changed cannot include 'world_size': each process's data shard and random "
                "state are saved per rank, so a checkpoint only continues with the process count that wrote it"
            )
        elif name not in ALLOWABLE_CHANGES:
            problems.append(f"resume_allow_changed: unknown name {name!r}; choose from {list(ALLOWABLE_CHANGES)}")
    return problems


def kubeflow_available() -> bool:
    """The Kubeflow controller's URL is set and the integration not disabled (HF ``is_kubeflow_available``)."""
    if os.environ.get("DISABLE_KUBEFLOW_INTEGRATION", "FALSE").upper() == "TRUE":
        return False
    return os.environ.get("KUBEFLOW_TRAINER_SERVER_URL") is not None
