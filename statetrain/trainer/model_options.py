"""What the arguments ask of the model itself: a head to train, activation checkpointing,
compilation, NEFTune embedding noise and special tokens aligned with the tokenizer (HF
``Trainer.__init__``/``train`` semantics).

The checks run when the Trainer is built (and again for each model ``model_init`` builds), so a
model that cannot do what the arguments ask fails before any data is loaded, with its class named.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import sys
import warnings
from collections.abc import Iterator
from typing import Any, cast

import torch
from torch import nn

from statetrain.checkpoint.peft_adapter import is_peft_model
from statetrain.events.hf_loggers import hf_facing_logger

__all__ = [
    "align_special_tokens",
    "check_model_options",
    "compile_model",
    "enable_activation_checkpointing",
    "input_embeddings",
    "neftune",
    "neftune_post_forward_hook",
    "reject_bare_base_model",
    "reject_untrainable_quantized",
]

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _base_model_class_names() -> frozenset[str]:
    """Class names of transformers' head-less models (the values of ``MODEL_MAPPING_NAMES``)."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    names: set[str] = set()
    for value in MODEL_MAPPING_NAMES.values():
        names.update([value] if isinstance(value, str) else value)
    return frozenset(names)


def reject_bare_base_model(model: nn.Module) -> None:
    """Refuse a transformers base model (``GPT2Model``...): it has no head, so no loss to train.

    transformers is only consulted for its own classes, so statetrain never imports it for a plain
    torch model. HF tests the class name against the mapping's keys (model types such as "gpt2"),
    which never match; the class names are the mapping's values.
    """
    cls = type(model)
    if not cls.__module__.startswith("transformers"):
        return
    try:
        names = _base_model_class_names()
    except ImportError:  # a transformers too old or too new to have the mapping: nothing to test
        return
    if cls.__name__ in names:
        raise ValueError(
            f"{cls.__name__} cannot be trained as is: it is a base model without a head, so it only "
            "computes hidden states and accepts no labels. Load a model with a head for your task "
            "through an AutoModelFor... class (AutoModelForCausalLM, AutoModelForSequenceClassification, "
            "...; see https://huggingface.co/docs/transformers/model_doc/auto)."
        )


def reject_untrainable_quantized(model: nn.Module) -> None:
    """Refuse a quantized transformers model that cannot be fine-tuned, when the Trainer is built (HF's rules).

    Quantized weights do not train: adapters (PEFT) must carry the training, unless the quantization
    method trains itself (QAT); a compiled quantized model cannot be fine-tuned at all.
    """
    if not getattr(model, "is_quantized", False) or getattr(model, "_hf_peft_config_loaded", False):
        return
    name = type(model).__name__
    if hasattr(model, "_orig_mod"):
        raise ValueError(
            f"{name} is a quantized model compiled with torch.compile, which cannot be fine-tuned: pass the "
            "model to the Trainer before torch.compile"
        )
    quantizer = getattr(model, "hf_quantizer", None)
    if not is_peft_model(model) and not getattr(quantizer, "is_qat_trainable", False):
        raise ValueError(
            f"{name} is quantized and has no trainable adapters: quantized weights cannot be fine-tuned. "
            "Attach adapters first (peft.get_peft_model), see https://huggingface.co/docs/transformers/peft"
        )
    if quantizer is None or not quantizer.is_trainable:
        method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", "its quantization method")
        raise ValueError(f"{name} is quantized with {method}, which does not support training")


def input_embeddings(model: nn.Module) -> nn.Module:
    """The module NEFTune adds noise after: ``model.get_input_embeddings()``, as HF reads it."""
    getter = getattr(model, "get_input_embeddings", None)
    embeddings = getter() if callable(getter) else None
    if not isinstance(embeddings, nn.Module):
        raise ValueError(
            f"TrainingArguments.neftune_noise_alpha is set, but {type(model).__name__} has no input "
            "embeddings to add noise to: define get_input_embeddings() returning its nn.Embedding, or "
            "leave neftune_noise_alpha unset"
        )
    return embeddings


def _checkpointing_method(model: nn.Module) -> str | None:
    for name in ("activation_checkpointing_enable", "gradient_checkpointing_enable"):
        if callable(getattr(model, name, None)):
            return name
    return None


def check_model_options(model: nn.Module, args: Any) -> None:
    """Fail early, naming the model class, when the model cannot do what the arguments ask."""
    name = type(model).__name__
    if args.activation_checkpointing:
        if _checkpointing_method(model) is None:
            raise ValueError(
                f"TrainingArguments.activation_checkpointing (gradient_checkpointing) is set, but {name} "
                "cannot recompute its activations: it defines neither activation_checkpointing_enable() "
                "nor gradient_checkpointing_enable(). Implement one (wrapping its blocks in "
                "torch.utils.checkpoint.checkpoint) or set activation_checkpointing=False"
            )
        if getattr(model, "supports_gradient_checkpointing", True) is False:
            raise ValueError(
                f"TrainingArguments.activation_checkpointing (gradient_checkpointing) is set, but {name} "
                "does not support activation checkpointing (supports_gradient_checkpointing=False); "
                "set activation_checkpointing=False"
            )
    if args.neftune_noise_alpha is not None:
        input_embeddings(model)


def enable_activation_checkpointing(model: nn.Module, args: Any) -> None:
    """Turn on activation checkpointing as HF ``train()`` does, with its kwargs.

    ``every_n_layers`` and ``offload`` are the model method's own options; the other keys go on to
    ``torch.utils.checkpoint.checkpoint``. A model that only has the deprecated
    ``gradient_checkpointing_enable`` is still served, with HF's FutureWarning.
    """
    if not args.activation_checkpointing:
        return
    check_model_options(model, args)
    options = dict(args.activation_checkpointing_kwargs or {})
    layer_options = {"every_n_layers": options.pop("every_n_layers", 1), "offload": options.pop("offload", False)}
    method_name = _checkpointing_method(model)
    assert method_name is not None
    method = getattr(model, method_name)
    if method_name == "activation_checkpointing_enable":
        kwargs: dict[str, Any] = {"activation_checkpointing_kwargs": options or None}
    else:
        warnings.warn(
            f"`{type(model).__name__}` only defines `gradient_checkpointing_enable`, which is deprecated "
            "and will no longer be called in v6. Define `activation_checkpointing_enable` instead.",
            FutureWarning,
            stacklevel=3,
        )
        kwargs = {"gradient_checkpointing_kwargs": options or None}
    kwargs.update(_accepted_layer_options(method, layer_options))
    method(**kwargs)


def _accepted_layer_options(method: Any, layer_options: dict[str, Any]) -> dict[str, Any]:
    """HF passes ``every_n_layers``/``offload`` always; a method without them gets them only when set."""
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return layer_options
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return layer_options
    defaults = {"every_n_layers": 1, "offload": False}
    return {key: value for key, value in layer_options.items() if key in params or value != defaults[key]}


def compile_model(model: nn.Module, args: Any) -> nn.Module:
    """``torch.compile`` the prepared model with ``torch_compile_backend``/``torch_compile_mode``.

    HF hands these to accelerate's dynamo plugin, which compiles inside ``prepare``. accelerate
    keeps the plugin of the first ``Accelerator`` in the process, so a later Trainer asking for
    compilation would silently get none; compiling here, on the prepared model, has no such trap.
    """
    if not args.torch_compile:
        return model
    from accelerate.utils import is_compiled_module

    if is_compiled_module(model):
        return model
    backend = args.torch_compile_backend or "inductor"
    compiled: nn.Module = torch.compile(  # type: ignore[assignment]
        model,
        backend=backend,
        mode=args.torch_compile_mode,
        dynamic=False if backend == "neuron" else None,  # neuron cannot compile dynamic shapes (as HF)
    )
    return compiled


def neftune_post_forward_hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
    """NEFTune (arXiv:2310.05914): uniform noise of scale ``alpha / sqrt(length * dim)`` on the embeddings.

    Only in training mode, so evaluation inside or after ``train()`` sees clean embeddings.
    """
    del inputs
    if module.training:
        dims = torch.tensor(output.size(-2) * output.size(-1))
        alpha = cast(float, module.neftune_noise_alpha)
        magnitude = alpha / torch.sqrt(dims)
        output = output + torch.zeros_like(output).uniform_(-magnitude, magnitude)  # type: ignore[arg-type]
    return output


@contextlib.contextmanager
def neftune(model: nn.Module, alpha: float | None) -> Iterator[None]:
    """Add NEFTune noise to ``model``'s input embeddings for the block; the hook goes at exit, even on error."""
    if alpha is None:
        yield
        return
    embeddings = input_embeddings(model)
    embeddings.neftune_noise_alpha = alpha  # type: ignore[assignment]
    handle = embeddings.register_forward_hook(neftune_post_forward_hook)
    try:
        yield
    finally:
        handle.remove()
        if hasattr(embeddings, "neftune_noise_alpha"):
            del embeddings.neftune_noise_alpha


def align_special_tokens(model: nn.Module, processing_class: Any) -> None:
    """Give the model's config and generation config the tokenizer's PAD/BOS/EOS ids, as HF ``train()`` does.

    Fine-tuning often adds tokens (an end-of-turn EOS on a chat model); generation and evaluation
    must then use them. Only ids the tokenizer defines are set; an EOS list keeps its other ids.
    """
    tokenizer = _tokenizer_of(processing_class)
    config = getattr(model, "config", None)
    if tokenizer is None or config is None:
        return
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    generation = getattr(model, "generation_config", None)
    changed: dict[str, Any] = {}
    for name, several in (("eos_token_id", True), ("bos_token_id", False), ("pad_token_id", False)):
        token_id = getattr(tokenizer, name, None)
        if token_id is not None:
            _align_token(name, token_id, text_config, generation, changed, several)
    if changed:
        hf_facing_logger(logger).warning(
            "The tokenizer's PAD/BOS/EOS tokens differ from the model config and generation config; "
            f"both were updated to the tokenizer's values before training: {changed}."
        )


def _tokenizer_of(processing_class: Any) -> Any:
    """The tokenizer of a transformers tokenizer or processor; None for anything else."""
    if processing_class is None or "transformers" not in sys.modules:
        return None
    from transformers import PreTrainedTokenizerBase, ProcessorMixin

    if isinstance(processing_class, ProcessorMixin):
        return getattr(processing_class, "tokenizer", None)
    return processing_class if isinstance(processing_class, PreTrainedTokenizerBase) else None


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _align_token(
    name: str, token_id: int, config: Any, generation: Any, changed: dict[str, Any], several: bool
) -> None:
    """Set one id on both configs unless both hold it already; with ``several`` (EOS) lists only grow."""
    held = getattr(config, name, None)
    generated = _as_list(getattr(generation, name, None)) if generation is not None else []
    if token_id in _as_list(held) and (generation is None or token_id in generated):
        return
    changed[name] = token_id
    if several and isinstance(held, list):
        setattr(config, name, [token_id, *(t for t in held if t != token_id)])
    else:
        setattr(config, name, token_id)
    if generation is None:
        return
    if several:
        setattr(generation, name, [token_id, *(t for t in generated if t is not None and t != token_id)])
    else:
        setattr(generation, name, token_id)
