"""Evaluation and prediction with HF's semantics: ``evaluate``, ``predict``, ``evaluation_loop``,
``prediction_step``, and best-metric tracking. Mixed into the ``Trainer``; every method is
overridable as in HF.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, SequentialSampler

from statetrain.context.memory import MemoryTracker
from statetrain.context.metrics import speed_metrics
from statetrain.data.batches import has_length
from statetrain.data.nested import (
    EvalLoopContainer,
    denumpify_detensorize,
    find_batch_size,
    nested_detach,
)
from statetrain.events.event import Event
from statetrain.trainer.eval_types import EvalLoopOutput, EvalPrediction, PredictionOutput


def can_return_loss(model_class: type) -> bool:
    """Whether ``forward`` has a ``return_loss`` parameter defaulting to True (HF rule)."""
    params = inspect.signature(model_class.forward).parameters  # type: ignore[attr-defined]
    return "return_loss" in params and params["return_loss"].default is True


class EvaluationMixin:
    """The evaluation half of the Trainer facade."""

    if TYPE_CHECKING:  # what the Trainer provides
        args: Any
        _memory_tracker: MemoryTracker
        accelerator: Any
        model: nn.Module
        model_wrapped: nn.Module
        eval_dataset: Any
        compute_metrics: Any
        preprocess_logits_for_metrics: Any
        label_names: list[str]
        can_return_loss: bool
        is_in_train: bool
        optimizer: Any
        callback_refs: dict[str, Any]
        state: Any
        model_preparation_time: float
        compute_loss: Any

        def _apply_column_removal(self, dataset: Any, description: str) -> tuple[Any, Any]: ...
        def log(self, logs: dict[str, Any], start_time: float | None = None) -> None: ...
        def _fire(self, event: Event, **payload: Any) -> dict[str, Any]: ...
        def _prepare_input(self, data: Any) -> Any: ...
        def _prepare_inputs(self, inputs: Any) -> Any: ...
        def compute_loss_context_manager(self) -> Any: ...
        def _get_num_items_in_batch(self, batches: list[Any], device: Any) -> Any: ...
        def num_examples(self, dataloader: Any) -> int: ...
        def _step_scheduler_on_metrics(self, metrics: dict[str, float]) -> None: ...

    # --- data ---------------------------------------------------------------------------------
    def get_eval_dataloader(self, eval_dataset: Any = None) -> DataLoader[Any]:
        """The evaluation loader; a string picks one dataset of a dict ``eval_dataset``."""
        if eval_dataset is None and self.eval_dataset is None:
            raise ValueError("Trainer: evaluation requires an eval_dataset.")
        # with persistent workers the loader of the Trainer's own eval dataset (or of one named part
        # of it, or the same dataset object passed in) is built once, as in HF, so its workers live
        # on between evaluations; another dataset passed in gets its own loader
        own = eval_dataset is None or eval_dataset is self.eval_dataset
        key = eval_dataset if isinstance(eval_dataset, str) else "eval" if own else None
        persistent = bool(self.args.dataloader_persistent_workers) and key is not None
        cache: dict[str, DataLoader[Any]] = self.__dict__.setdefault("_eval_dataloaders", {})
        if persistent and key in cache:
            return cache[key]
        if isinstance(eval_dataset, str):
            if not isinstance(self.eval_dataset, Mapping) or eval_dataset not in self.eval_dataset:
                raise KeyError(f"no evaluation dataset named {eval_dataset!r}")
            dataset = self.eval_dataset[eval_dataset]
        else:
            dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        loader = self._eval_loader(dataset, "evaluation")
        if persistent:
            cache[str(key)] = loader
        return loader

    def get_test_dataloader(self, test_dataset: Any) -> DataLoader[Any]:
        return self._eval_loader(test_dataset, "test")

    def _eval_loader(self, dataset: Any, description: str) -> DataLoader[Any]:
        dataset, collator = self._apply_column_removal(dataset, description)
        params: dict[str, Any] = {
            "batch_size": self.args.eval_batch_size,
            "collate_fn": collator,
            "num_workers": self.args.dataloader_num_workers,
            "pin_memory": self.args.dataloader_pin_memory,
            "persistent_workers": self.args.dataloader_persistent_workers,
        }
        if self.args.dataloader_num_workers > 0:
            params["prefetch_factor"] = self.args.dataloader_prefetch_factor
        if not isinstance(dataset, IterableDataset):
            if self.args.world_size <= 1 and has_length(dataset):
                params["sampler"] = SequentialSampler(dataset)
            params["drop_last"] = self.args.dataloader_drop_last
        return self.accelerator.prepare(DataLoader(dataset, **params))

    def _evaluate(
        self, trial: Any = None, ignore_keys_for_eval: list[str] | None = None, skip_scheduler: bool = False
    ) -> dict[str, float]:
        """HF's mid-training evaluation: ``evaluate``, then a metric-driven schedule steps on the metric.

        The evaluate state goes through it, so a subclass overriding it (or a test patching it, as
        HF's own tests do) changes the metrics training acts on, as with HF.
        """
        del trial  # a trial is reported to the search through the bus, not from here
        metrics = self.evaluate(ignore_keys=ignore_keys_for_eval)
        if not skip_scheduler:
            self._step_scheduler_on_metrics(metrics)
        return metrics

    # --- public API ---------------------------------------------------------------------------
    def evaluate(
        self,
        eval_dataset: Any = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        """Evaluate and return flat metrics; a dict of datasets is evaluated per key with prefixed names."""
        override = eval_dataset is not None
        dataset = eval_dataset if override else self.eval_dataset
        if isinstance(dataset, Mapping):
            metrics: dict[str, float] = {}
            for name, part in dataset.items():
                metrics.update(
                    self.evaluate(
                        eval_dataset=part if override else name,
                        ignore_keys=ignore_keys,
                        metric_key_prefix=f"{metric_key_prefix}_{name}",
                    )
                )
            return metrics
        self._memory_tracker.start("eval")
        dataloader = self.get_eval_dataloader(dataset)
        start_time = time.time()
        output = self.evaluation_loop(
            dataloader,
            description="Evaluation",
            prediction_loss_only=True if self.compute_metrics is None else None,
            ignore_keys=ignore_keys,
            metric_key_prefix=metric_key_prefix,
        )
        metrics = self._add_speed_metrics(output, metric_key_prefix, start_time)
        self.log(metrics)
        self._fire(Event.ON_EVALUATE, metrics=metrics)
        self._memory_tracker.stop_and_report("eval", metrics)  # after the log, as in HF
        return metrics

    def _add_speed_metrics(self, output: EvalLoopOutput, prefix: str, start_time: float) -> dict[str, float]:
        """HF's ``<prefix>_runtime`` and rates; model preparation time is not counted as running."""
        assert output.metrics is not None
        prep = output.metrics.get(f"{prefix}_model_preparation_time")
        if prep is not None:
            start_time += prep
        num_samples = output.num_samples or 0
        total_batch = self.args.eval_batch_size * self.args.world_size
        output.metrics.update(
            speed_metrics(prefix, start_time, num_samples=num_samples, num_steps=math.ceil(num_samples / total_batch))
        )
        return output.metrics

    def predict(
        self, test_dataset: Any, ignore_keys: list[str] | None = None, metric_key_prefix: str = "test"
    ) -> PredictionOutput:
        """Predictions (padded with -100 across batches of different lengths), labels and metrics."""
        self._memory_tracker.start("test")
        dataloader = self.get_test_dataloader(test_dataset)
        start_time = time.time()
        output = self.evaluation_loop(
            dataloader, description="Prediction", ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix
        )
        self._add_speed_metrics(output, metric_key_prefix, start_time)
        self._fire(Event.ON_PREDICT, metrics=output.metrics)
        assert output.metrics is not None
        self._memory_tracker.stop_and_report("test", output.metrics)
        return PredictionOutput(output.predictions, output.label_ids, output.metrics)

    def _model_for_eval(self) -> nn.Module:
        """The prepared model; prepared for evaluation first when training never ran (HF timing)."""
        model = self.model_wrapped
        if len(self.accelerator._models) == 0 and model is self.model:
            started = time.time()
            model = self.accelerator.prepare_model(model, evaluation_mode=True)
            self.model_preparation_time = round(time.time() - started, 4)
            if model is not self.model:
                self.model_wrapped = model
        if not self.is_in_train:
            if self.args.fp16_full_eval:
                model = model.to(dtype=torch.float16, device=self.args.device)
            elif self.args.bf16_full_eval:
                model = model.to(dtype=torch.bfloat16, device=self.args.device)
        return model

    def evaluation_loop(
        self,
        dataloader: DataLoader[Any],
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> EvalLoopOutput:
        """The loop shared by ``evaluate`` and ``predict``; works with or without labels."""
        args = self.args
        loss_only = prediction_loss_only if prediction_loss_only is not None else args.prediction_loss_only
        model = self._model_for_eval()
        model.eval()
        optimizer_eval = getattr(self.optimizer, "eval", None)
        if callable(optimizer_eval):
            optimizer_eval()
        self.callback_refs["eval_dataloader"] = dataloader
        include = set(args.include_for_metrics or [])
        keep_all = not args.batch_eval_metrics or description == "Prediction"
        concat = args.eval_do_concat_batches
        losses_acc, preds_acc = EvalLoopContainer(concat), EvalLoopContainer(concat)
        labels_acc, inputs_acc = EvalLoopContainer(concat), EvalLoopContainer(concat)
        # HF's hook: gather_for_metrics drops the samples the last batch repeated; Seq2SeqTrainer keeps all
        gather = getattr(self, "gather_function", None) or self.accelerator.gather_for_metrics
        pad = self.accelerator.pad_across_processes
        batch_size = args.eval_batch_size
        observed = 0
        metrics: dict[str, Any] | None = None
        main_input = getattr(self.model, "main_input_name", "input_ids")
        for step, inputs in enumerate(dataloader):
            found = find_batch_size(inputs)
            if found is not None:
                observed += found
                batch_size = batch_size or found
            loss, logits, labels = self.prediction_step(model, inputs, loss_only, ignore_keys=ignore_keys)
            inputs_decode = self._prepare_input(inputs[main_input]) if "inputs" in include else None
            if loss is not None:
                loss = gather(loss.repeat(batch_size))
                losses_acc.add(loss)
            if inputs_decode is not None:
                inputs_decode = gather(pad(inputs_decode, dim=1, pad_index=-100))
                if keep_all:
                    inputs_acc.add(inputs_decode)
            if labels is not None:
                labels = pad(labels, dim=1, pad_index=-100)
            if logits is not None:
                logits = pad(logits, dim=1, pad_index=-100)
                if self.preprocess_logits_for_metrics is not None:
                    logits = self.preprocess_logits_for_metrics(logits, labels)
                logits = gather(logits)
                if keep_all:
                    preds_acc.add(logits)
            if labels is not None:
                labels = gather(labels)
                if keep_all:
                    labels_acc.add(labels)
            self._fire(Event.ON_PREDICTION_STEP)
            if args.batch_eval_metrics:
                if self.compute_metrics is not None and logits is not None and labels is not None:
                    last = self.accelerator.gradient_state.end_of_dataloader
                    metrics = self.compute_metrics(
                        EvalPrediction(
                            logits,
                            labels,
                            inputs=inputs if "inputs" in include else None,
                            losses=loss if "loss" in include else None,
                        ),
                        compute_result=last,
                    )
            elif args.eval_accumulation_steps is not None and (step + 1) % args.eval_accumulation_steps == 0:
                for container in (losses_acc, preds_acc, labels_acc, inputs_acc):
                    container.to_cpu_and_numpy()
        containers = (losses_acc, preds_acc, labels_acc, inputs_acc)
        return self._finish_evaluation(
            containers,
            include,
            num_samples=_num_samples(self, dataloader, observed),
            metrics=metrics,
            metric_key_prefix=metric_key_prefix,
        )

    def _finish_evaluation(
        self,
        containers: tuple[EvalLoopContainer, EvalLoopContainer, EvalLoopContainer, EvalLoopContainer],
        include: set[str],
        *,
        num_samples: int,
        metrics: dict[str, Any] | None,
        metric_key_prefix: str,
    ) -> EvalLoopOutput:
        """Metrics over everything gathered (unless computed per batch), the mean loss, HF's key prefix."""
        args = self.args
        all_losses, all_preds, all_labels, all_inputs = (container.get_arrays() for container in containers)
        if (
            self.compute_metrics is not None
            and all_preds is not None
            and all_labels is not None
            and not (args.batch_eval_metrics)
        ):
            metrics = self.compute_metrics(
                EvalPrediction(
                    all_preds,
                    all_labels,
                    inputs=all_inputs if "inputs" in include else None,
                    losses=all_losses if "loss" in include else None,
                )
            )
        elif metrics is None:
            metrics = {}
        metrics = denumpify_detensorize(metrics)
        assert metrics is not None
        losses = np.concatenate(all_losses) if isinstance(all_losses, list) and all_losses else all_losses
        if isinstance(losses, np.ndarray):
            finite = np.isfinite(losses)
            if args.logging_nan_inf_filter and finite.any():
                losses = losses[finite]
            metrics[f"{metric_key_prefix}_loss"] = losses.mean().item()
        if hasattr(self, "model_preparation_time"):
            metrics[f"{metric_key_prefix}_model_preparation_time"] = self.model_preparation_time
        for key in list(metrics):
            if not key.startswith(f"{metric_key_prefix}_"):
                metrics[f"{metric_key_prefix}_{key}"] = metrics.pop(key)
        return EvalLoopOutput(all_preds, all_labels, metrics, num_samples)

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, Any, Any]:
        """Loss, logits and labels of one batch without gradients (HF semantics)."""
        has_labels = bool(self.label_names) and all(inputs.get(k) is not None for k in self.label_names)
        return_loss = inputs.get("return_loss")
        if return_loss is None:
            return_loss = self.can_return_loss
        loss_without_labels = not self.label_names and bool(return_loss)
        inputs = self._prepare_inputs(inputs)
        if ignore_keys is None:
            config = getattr(self.model, "config", None)
            ignore_keys = list(getattr(config, "keys_to_ignore_at_inference", ["cache"])) if config is not None else []
        labels: Any = None
        if has_labels or loss_without_labels:
            labels = nested_detach(tuple(inputs.get(name) for name in self.label_names))
            if len(labels) == 1:
                labels = labels[0]
        with torch.no_grad():
            if has_labels or loss_without_labels:
                num_items = self._get_num_items_in_batch([inputs], self.args.device)
                with self.compute_loss_context_manager():
                    loss, outputs = self.compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items)
                loss = loss.detach().mean()
                if isinstance(outputs, Mapping):
                    logits = tuple(v for k, v in outputs.items() if k not in [*ignore_keys, "loss"])
                else:
                    logits = outputs[1:]
            else:
                loss = None
                with self.compute_loss_context_manager():
                    outputs = model(**inputs)
                if isinstance(outputs, Mapping):
                    logits = tuple(v for k, v in outputs.items() if k not in ignore_keys)
                else:
                    logits = outputs
        if prediction_loss_only:
            return loss, None, None
        logits = nested_detach(logits)
        if len(logits) == 1:
            logits = logits[0]
        return loss, logits, labels

    # --- best model tracking ------------------------------------------------------------------
    def _determine_best_metric(self, metrics: dict[str, float]) -> bool:
        """Update ``state.best_metric``/``best_global_step``; True on a strictly better value (HF)."""
        name = self.args.metric_for_best_model
        if name is None:
            return False
        key = name if name.startswith("eval_") else f"eval_{name}"
        if key not in metrics:
            raise KeyError(
                f"TrainingArguments.metric_for_best_model is set to {key!r}, which is not found in the evaluation "
                f"metrics {sorted(metrics)}: return it from compute_metrics or choose one of those"
            )
        value = metrics[key]
        greater = bool(self.args.greater_is_better)
        state = self.state
        if state.best_metric is None:
            state.best_metric = float("-inf") if greater else float("inf")
        better = value > state.best_metric if greater else value < state.best_metric
        if better:
            state.best_metric = value
            if str(getattr(self.args.save_strategy, "value", self.args.save_strategy)) in ("steps", "epoch", "best"):
                state.best_global_step = state.global_step
        return bool(better)


def _num_samples(trainer: EvaluationMixin, dataloader: Any, observed: int) -> int:
    dataset: Any = getattr(dataloader, "dataset", None)
    if has_length(dataset):
        count = len(dataset)
    elif has_length(dataloader):
        count = trainer.num_examples(dataloader)
    else:
        count = observed
    return observed if count == 0 and observed > 0 else count
