"""``Seq2SeqTrainer``: evaluation and prediction through ``model.generate`` (HF's ``Seq2SeqTrainer``).

With ``predict_with_generate``, each evaluation batch is generated (``generation_max_length``,
``generation_num_beams``, or ``generate`` keyword arguments given to ``evaluate``/``predict``),
the loss still comes from a forward pass on the labels, and generated ids and labels are padded
to the generation length with the tokenizer's (or the model's) pad token, as HF pads them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from statetrain.trainer.eval_types import PredictionOutput
from statetrain.trainer.trainer import Trainer


class Seq2SeqTrainer(Trainer):
    """Drop-in for ``transformers.Seq2SeqTrainer``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gen_kwargs: dict[str, Any] = {}
        config = getattr(self.args, "generation_config", None)
        if config is not None:  # the arguments' config wins over the model's, as in HF
            self.model.generation_config = self.load_generation_config(config)

    @staticmethod
    def load_generation_config(gen_config_arg: str | Any) -> Any:
        """A ``GenerationConfig`` from an object (copied), a file, a folder or a model id; validated strictly."""
        from transformers import GenerationConfig

        if isinstance(gen_config_arg, GenerationConfig):
            config = copy.deepcopy(gen_config_arg)
        else:
            path = Path(gen_config_arg)
            if path.is_file():
                config = GenerationConfig.from_pretrained(path.parent, path.name)
            else:
                config = GenerationConfig.from_pretrained(path if path.is_dir() else gen_config_arg)
        try:
            config.validate(strict=True)
        except ValueError as exc:
            raise ValueError(f"Seq2SeqTrainingArguments.generation_config is not valid: {exc}") from exc
        return config

    def _generation_kwargs(self, given: dict[str, Any]) -> dict[str, Any]:
        """``generate`` options: the call's, else the arguments' ``generation_max_length``/``_num_beams``."""
        chosen = dict(given)
        max_length = getattr(self.args, "generation_max_length", None)
        if chosen.get("max_length") is None and chosen.get("max_new_tokens") is None and max_length is not None:
            chosen["max_length"] = max_length
        beams = getattr(self.args, "generation_num_beams", None)
        if chosen.get("num_beams") is None and beams is not None:
            chosen["num_beams"] = beams
        return chosen

    def evaluate(
        self,
        eval_dataset: Any = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
        **gen_kwargs: Any,
    ) -> dict[str, float]:
        self._gen_kwargs = self._generation_kwargs(gen_kwargs)
        self.gather_function = self.accelerator.gather  # HF's Seq2SeqTrainer does not drop samples
        return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def predict(
        self,
        test_dataset: Any,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "test",
        **gen_kwargs: Any,
    ) -> PredictionOutput:
        self._gen_kwargs = self._generation_kwargs(gen_kwargs)
        self.gather_function = self.accelerator.gather
        return super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
        **gen_kwargs: Any,
    ) -> tuple[torch.Tensor | None, Any, Any]:
        """Generated ids (padded to the generation length) with the forward pass's loss, or the plain step."""
        if not getattr(self.args, "predict_with_generate", False) or prediction_loss_only:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        has_labels = "labels" in inputs
        inputs = self._prepare_inputs(inputs)
        options = dict(gen_kwargs) if gen_kwargs else dict(self._gen_kwargs)
        for key in ("num_beams", "max_length"):
            if key in options and options[key] is None:
                del options[key]
        options.setdefault("synced_gpus", bool(getattr(self, "is_deepspeed_enabled", False)))
        generation_inputs = inputs
        if "labels" in inputs and "decoder_input_ids" in inputs:
            # decoder inputs made from the labels would make generate continue them: leave them out
            generation_inputs = {
                k: v for k, v in inputs.items() if k not in ("decoder_input_ids", "decoder_attention_mask")
            }
        generator: Any = self.accelerator.unwrap_model(self.model)
        generated = generator.generate(**generation_inputs, **options)
        config = generator.generation_config
        if config._from_model_config:
            config._from_model_config = False
        config.update(**config._get_default_generation_params(), defaults_only=True)
        generated = self._pad_to_generation_length(generated, config)
        loss = None
        if has_labels:
            with torch.no_grad(), self.compute_loss_context_manager():
                outputs = model(**inputs)
            if self.label_smoother is not None:
                loss = self.label_smoother(outputs, inputs["labels"]).detach().mean()
            else:
                loss = (outputs["loss"] if isinstance(outputs, dict) else outputs[0]).detach().mean()
        if self.args.prediction_loss_only:
            return loss, None, None
        labels = self._pad_to_generation_length(inputs["labels"], config) if has_labels else None
        return loss, generated, labels

    def _pad_to_generation_length(self, tensor: torch.Tensor, config: Any) -> torch.Tensor:
        if tensor.shape[-1] < config.max_length:
            return self._pad_tensors_to_max_len(tensor, config.max_length)
        if config.max_new_tokens is not None and tensor.shape[-1] < config.max_new_tokens + 1:
            return self._pad_tensors_to_max_len(tensor, config.max_new_tokens + 1)
        return tensor

    def _pad_tensors_to_max_len(self, tensor: torch.Tensor, max_length: int) -> torch.Tensor:
        tokenizer = self.processing_class
        if tokenizer is not None and hasattr(tokenizer, "pad_token_id"):
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        elif getattr(getattr(self.model, "config", None), "pad_token_id", None) is not None:
            pad = self.model.config.pad_token_id  # type: ignore[union-attr]
        else:
            raise ValueError(
                "Seq2SeqTrainer: padding generated ids needs a pad token: give a processing_class with "
                "pad_token_id, or set model.config.pad_token_id"
            )
        padded = torch.full((tensor.shape[0], max_length), pad, dtype=tensor.dtype, device=tensor.device)
        padded[:, : tensor.shape[-1]] = tensor
        return padded
