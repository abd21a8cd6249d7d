"""transformers 4 argument names that transformers 5 dropped, and what to do instead.

A script written for 4.x passes them; a generic "unknown argument" would send its user hunting,
so the refusal says the name was removed and what replaces it. Like transformers 5.24 itself,
they are refused with a ``TypeError`` (an unexpected keyword), not accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Iterable

REMOVED_IN_5: dict[str, str] = {
    "past_index": "models that return past states handle them themselves; remove it",
    "use_legacy_prediction_loop": "there is one evaluation loop; remove it",
    "ray_scope": "Ray Tune hyperparameter search options go to hyperparameter_search(); remove it",
    "fp16_opt_level": "apex AMP is gone; fp16=True uses torch AMP",
    "half_precision_backend": "mixed precision always uses torch AMP; remove it",
    "fp16_backend": "mixed precision always uses torch AMP; remove it",
    "tpu_num_cores": "launch with accelerate or torchrun instead",
    "tpu_metrics_debug": "use debug='tpu_metrics_debug' in transformers; remove it",
    "push_to_hub_model_id": "use hub_model_id",
    "push_to_hub_organization": "use hub_model_id='organization/name'",
    "push_to_hub_token": "use hub_token",
    "mp_parameters": "SageMaker model-parallel options are gone; remove it",
    "torchdynamo": "use torch_compile_backend",
    "use_ipex": "Intel extension support is gone; remove it",
    "include_tokens_per_second": "use include_num_input_tokens_seen",
    "split_batches": "use accelerator_config={'split_batches': ...}",
    "dispatch_batches": "use accelerator_config={'dispatch_batches': ...}",
    "fsdp_min_num_params": "use fsdp_config={'min_num_params': ...}",
    "fsdp_transformer_layer_cls_to_wrap": "use fsdp_config={'transformer_layer_cls_to_wrap': ...}",
}


def removed_names_message(owner: str, names: Iterable[str]) -> str | None:
    """One line per removed name with its replacement, or None when none of ``names`` was removed."""
    lines = [
        f"{owner}.{name} was removed in transformers 5 (statetrain follows 5.24): {REMOVED_IN_5[name]}"
        for name in sorted(names)
        if name in REMOVED_IN_5
    ]
    return "\n".join(lines) if lines else None
