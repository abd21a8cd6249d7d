"""``fsdp``/``fsdp_config``, ``deepspeed`` and the ``ddp_*`` arguments turned into accelerate's plugins.

The translation follows transformers 5.24 (``TrainingArguments._process_fsdp_args``,
``HfTrainerDeepSpeedConfig.trainer_config_process``, ``Trainer._build_accelerator_args``) so an HF
configuration means the same here. Differences, each for the same reason (nothing is ignored
silently): the arguments are never modified in place; a DeepSpeed value that contradicts an argument
is refused naming both; a missing ``deepspeed`` package is reported naming the argument that needs it;
XLA FSDP, DeepSpeed-built optimizers/schedules and sharded state dicts are refused by name (the
engine does not implement them), instead of running something else.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

from statetrain.args.optional_packages import require_deepspeed

_TRUE = {"true", "1", "yes", "y", "on", "t"}


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in _TRUE


def _load_config(name: str, value: Any) -> dict[str, Any]:
    """A dict, or the path of a JSON file holding one (JSON strings were parsed at construction)."""
    if isinstance(value, dict):
        return copy.deepcopy(value)
    path = Path(str(value))
    if not path.is_file():
        raise ValueError(f"TrainingArguments.{name}={str(value)!r} is neither a dict, a JSON object nor a JSON file")
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"TrainingArguments.{name}: {path} is not a readable JSON file: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ValueError(f"TrainingArguments.{name}: {path} holds a {type(loaded).__name__}, not a JSON object")
    return loaded


# --- FSDP ----------------------------------------------------------------------------------------


def _fsdp_words_into_config(fsdp: Any, config: dict[str, Any]) -> None:
    """The legacy word form of ``fsdp`` ("full_shard offload auto_wrap") as ``fsdp_config`` entries."""
    from accelerate.utils.constants import FSDP_SHARDING_STRATEGY

    words = fsdp.split() if isinstance(fsdp, str) else list(fsdp)
    version = int(config.get("version", 2))
    for word in words:
        if word.upper() in FSDP_SHARDING_STRATEGY:
            if version == 1:
                config.setdefault("reshard_after_forward", word)
            elif word in ("full_shard", "shard_grad_op"):
                config.setdefault("reshard_after_forward", word == "full_shard")
            else:
                raise ValueError(f"fsdp={word!r} exists only in FSDP1; set fsdp_config['version'] = 1 to use it")
        elif word == "offload":
            config.setdefault("cpu_offload", True)
        elif word != "auto_wrap":  # auto_wrap is the default policy already
            raise ValueError(f"unknown fsdp option {word!r}")


def fsdp_plugin_kwargs(args: Any) -> dict[str, Any] | None:
    """The keyword arguments of ``FullyShardedDataParallelPlugin`` for ``fsdp``/``fsdp_config``; None when off."""
    fsdp = getattr(args, "fsdp", None)
    if not fsdp:
        return None
    from accelerate.utils.constants import FSDP_AUTO_WRAP_POLICY

    raw = getattr(args, "fsdp_config", None)
    config = {} if raw is None else _load_config("fsdp_config", raw)
    config = {(key[5:] if key.startswith("fsdp_") else key): value for key, value in config.items()}
    if isinstance(fsdp, (str, list, tuple)):
        _fsdp_words_into_config(fsdp, config)
    if _flag(config.get("xla", False)):
        raise NotImplementedError("fsdp_config['xla'] (PyTorch/XLA FSDP) is not supported by statetrain")
    layers = config.get("transformer_layer_cls_to_wrap")
    if isinstance(layers, str):
        layers = [layers]
    min_num_params = int(config.get("min_num_params", 0))
    version = int(config.get("version", 2))
    kwargs: dict[str, Any] = {"fsdp_version": version}
    if _flag(config.get("cpu_offload", False)):
        kwargs["cpu_offload"] = True
    policy = config.get("auto_wrap_policy", FSDP_AUTO_WRAP_POLICY[0])
    if policy not in FSDP_AUTO_WRAP_POLICY:
        raise ValueError(f"fsdp_config['auto_wrap_policy'] must be one of {FSDP_AUTO_WRAP_POLICY}, got {policy!r}")
    kwargs["auto_wrap_policy"] = policy
    if policy == "SIZE_BASED_WRAP" and min_num_params > 0:
        kwargs["min_num_params"] = min_num_params
    elif policy == "TRANSFORMER_BASED_WRAP" and layers:
        kwargs["transformer_cls_names_to_wrap"] = ",".join(layers)
    kwargs["cpu_ram_efficient_loading"] = _flag(config.get("cpu_ram_efficient_loading", False))
    kwargs["state_dict_type"] = config.get("state_dict_type", "FULL_STATE_DICT")
    if kwargs["state_dict_type"] != "FULL_STATE_DICT":
        raise NotImplementedError(
            f"fsdp_config['state_dict_type']={kwargs['state_dict_type']!r}: statetrain checkpoints hold full "
            "state dicts written once (safetensors + JSON, verified by one manifest); use 'FULL_STATE_DICT'"
        )
    if "activation_checkpointing" in config:
        kwargs["activation_checkpointing"] = _flag(config["activation_checkpointing"])
    if version == 2:
        kwargs["reshard_after_forward"] = _flag(config.get("reshard_after_forward", True))
    else:
        kwargs["reshard_after_forward"] = str(config.get("reshard_after_forward", "full_shard")).lower()
        kwargs["forward_prefetch"] = _flag(config.get("forward_prefetch", False))
        kwargs["backward_prefetch"] = str(config.get("backward_prefetch", "NO_PREFETCH")).upper()
        kwargs["use_orig_params"] = _flag(config.get("use_orig_params", True))
        kwargs["sync_module_states"] = _flag(config.get("sync_module_states", True))
        if "limit_all_gathers" in config:
            kwargs["limit_all_gathers"] = _flag(config["limit_all_gathers"])
    return kwargs


def build_fsdp_plugin(args: Any) -> Any:
    """accelerate's ``FullyShardedDataParallelPlugin`` from the arguments, or None when ``fsdp`` is off."""
    kwargs = fsdp_plugin_kwargs(args)
    if kwargs is None:
        return None
    from accelerate.utils import FullyShardedDataParallelPlugin

    # transformers reads this variable when it loads a model; accelerate warns without it
    os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = str(kwargs["cpu_ram_efficient_loading"]).lower()
    return FullyShardedDataParallelPlugin(**kwargs)


# --- DeepSpeed -----------------------------------------------------------------------------------


class _AutoFill:
    """Fill ``"auto"`` entries of a DeepSpeed config from the arguments; collect contradictions."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.mismatches: list[str] = []

    def _parent(self, dotted: str) -> tuple[dict[str, Any] | None, str]:
        *path, leaf = dotted.split(".")
        node: Any = self.config
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                return None, leaf
        return (node if isinstance(node, dict) else None), leaf

    def match(self, dotted: str, value: Any, argument: str, must_match: bool = True) -> None:
        """``"auto"`` becomes ``value``; any other value must equal it (HF ``fill_match``)."""
        parent, leaf = self._parent(dotted)
        if parent is None or leaf not in parent:
            return
        if parent[leaf] == "auto":
            parent[leaf] = value
        elif must_match and parent[leaf] != value:
            self.mismatches.append(f"- ds {dotted}={parent[leaf]!r} vs TrainingArguments {argument}={value!r}")

    def only(self, dotted: str, value: Any) -> None:
        """``"auto"`` becomes ``value``; an explicit value is kept (HF ``fill_only``)."""
        self.match(dotted, value, "", must_match=False)


def deepspeed_config(args: Any) -> dict[str, Any] | None:
    """The DeepSpeed config of ``deepspeed`` with its ``"auto"`` values filled from the arguments.

    The values known when the arguments are built (batch sizes, accumulation, clipping, optimizer
    hyperparameters, precision) are filled as transformers fills them; a value set in the config
    that contradicts an argument is refused, listing every contradiction.
    """
    raw = getattr(args, "deepspeed", None)
    if not raw:
        return None
    config = _load_config("deepspeed", raw)
    for section in ("optimizer", "scheduler"):
        if section in config:
            raise NotImplementedError(
                f"the DeepSpeed config has a {section!r} section: statetrain builds the optimizer and "
                "schedule from the arguments (optim, lr_scheduler_type) and hands them to DeepSpeed; "
                f"remove {section!r} from the config"
            )
    fill = _AutoFill(config)
    per_device = int(args.per_device_train_batch_size)
    accumulation = int(args.gradient_accumulation_steps)
    auto_batch = bool(getattr(args, "auto_find_batch_size", False))
    fill.match("train_micro_batch_size_per_gpu", per_device, "per_device_train_batch_size", not auto_batch)
    fill.match("gradient_accumulation_steps", accumulation, "gradient_accumulation_steps")
    total = int(args.world_size) * per_device * accumulation
    fill.match("train_batch_size", total, "train_batch_size (calculated)", not auto_batch)
    fill.match("gradient_clipping", args.max_grad_norm, "max_grad_norm")
    if getattr(args, "save_on_each_node", False):
        config.setdefault("checkpoint", {})["use_node_local_storage"] = True
    fill.match("fp16.enabled", bool(args.fp16 or args.fp16_full_eval), "fp16|fp16_full_eval")
    fill.match("bf16.enabled", bool(args.bf16 or args.bf16_full_eval), "bf16|bf16_full_eval")
    if fill.mismatches:
        raise ValueError(
            "the DeepSpeed config contradicts the TrainingArguments; set these entries to 'auto' or to the "
            "argument's value:\n" + "\n".join(fill.mismatches)
        )
    return config


def deepspeed_dtype(config: dict[str, Any]) -> Any:
    """The dtype DeepSpeed runs the model in (HF's ``HfTrainerDeepSpeedConfig.dtype``): fp16, bf16 or fp32."""
    import torch

    if _flag(config.get("fp16", {}).get("enabled", False)):
        return torch.float16
    if _flag(config.get("bf16", {}).get("enabled", False)):
        return torch.bfloat16
    return torch.float32


def build_deepspeed_plugin(args: Any) -> Any:
    """accelerate's ``DeepSpeedPlugin`` from ``deepspeed``; None when the argument is not set.

    Raises ImportError naming the argument and the package when ``deepspeed`` is not installed.
    """
    config = deepspeed_config(args)
    if config is None:
        return None
    require_deepspeed()
    stage = int(config.get("zero_optimization", {}).get("stage", 0))
    if stage == 3 and getattr(args, "load_best_model_at_end", False):
        raise NotImplementedError(
            "TrainingArguments.deepspeed with zero_optimization.stage=3 and load_best_model_at_end: ZeRO-3 "
            "partitions the model, and loading the best checkpoint's weights back into the partitions is not "
            "implemented; use stage 2, or leave load_best_model_at_end off and load the checkpoint afterwards"
        )
    if args.use_cpu or os.environ.get("ACCELERATE_USE_CPU", "").strip().lower() in _TRUE:
        raise ValueError(
            "TrainingArguments.deepspeed cannot run with use_cpu=True (or ACCELERATE_USE_CPU): accelerate enables "
            "DeepSpeed only without its CPU switch; leave use_cpu unset (on a machine without a GPU the processes "
            "a launcher started still join over gloo)"
        )
    from accelerate.utils import DeepSpeedPlugin

    return DeepSpeedPlugin(hf_ds_config=config)


# --- DDP -----------------------------------------------------------------------------------------


def ddp_kwargs(args: Any, model: Any = None) -> dict[str, Any]:
    """``DistributedDataParallel`` options from the ``ddp_*`` arguments, with HF's default for unused parameters.

    ``find_unused_parameters`` defaults to True, except for a transformers model, where it is off
    when activation checkpointing is on (the two conflict); ``ddp_find_unused_parameters`` overrides.
    """
    find_unused = getattr(args, "ddp_find_unused_parameters", None)
    if find_unused is None:
        is_pretrained = any(cls.__name__ == "PreTrainedModel" for cls in type(model).__mro__)
        checkpointing = bool(getattr(model, "is_activation_checkpointing", False)) or bool(
            getattr(args, "activation_checkpointing", False)
        )
        find_unused = not checkpointing if is_pretrained else True
    kwargs: dict[str, Any] = {"find_unused_parameters": bool(find_unused)}
    for name, key in (
        ("ddp_bucket_cap_mb", "bucket_cap_mb"),
        ("ddp_broadcast_buffers", "broadcast_buffers"),
        ("ddp_static_graph", "static_graph"),
    ):
        value = getattr(args, name, None)
        if value is not None:
            kwargs[key] = value
    return kwargs


def configure_ddp(accelerator: Any, args: Any, model: Any) -> None:
    """Give accelerate the DDP options for ``model`` before it is prepared (they depend on the model)."""
    from accelerate.utils import DistributedDataParallelKwargs

    accelerator.ddp_handler = DistributedDataParallelKwargs(**ddp_kwargs(args, model))
