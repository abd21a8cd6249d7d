"""HF-style training scripts, written once and run with either library (``lib`` is ``transformers`` or
``statetrain``): the only thing that changes between the two runs is where ``Trainer``,
``TrainingArguments`` and ``EarlyStoppingCallback`` come from, as for a user who changed one import.
Everything else (tokenizer, collator, models, ``HfArgumentParser``) is transformers'.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    HfArgumentParser,
    PreTrainedTokenizerFast,
)

from tests.checkpoint.gpt2_runs import lm_args, lm_rows, tiny_gpt2

WORDS = ["good", "bad", "fine", "awful", "movie", "plot", "actor", "great", "poor", "the", "a", "was"]
POSITIVE = {"good", "fine", "great"}


def local_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer built in code (no download)."""
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]")


def sentences(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 9))]
        score = sum(w in POSITIVE for w in words) - sum(w in {"bad", "awful", "poor"} for w in words)
        rows.append({"text": " ".join(words), "label": int(score > 0)})
    return rows


def accuracy(eval_pred: Any) -> dict[str, float]:
    logits, labels = eval_pred
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def text_classification(lib: Any, output_dir: str) -> tuple[Any, dict[str, Any]]:
    """run_glue-like: tokenize, pad per batch, eval/save by steps, keep the best, stop early."""
    tokenizer = local_tokenizer()

    def encode(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**tokenizer(r["text"]), "labels": r["label"]} for r in rows]

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(WORDS) + 2,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    model = BertForSequenceClassification(config)
    args = lib.TrainingArguments(
        output_dir,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        num_train_epochs=6,
        learning_rate=5e-3,
        eval_strategy="steps",
        eval_steps=4,
        save_strategy="steps",
        save_steps=4,
        save_total_limit=2,
        logging_steps=2,
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        seed=7,
    )
    trainer = lib.Trainer(
        model=model,
        args=args,
        train_dataset=encode(sentences(48, 1)),
        eval_dataset=encode(sentences(16, 2)),
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=accuracy,
        callbacks=[lib.EarlyStoppingCallback(early_stopping_patience=2)],
    )
    result = trainer.train()
    metrics = {"train": result.metrics, "eval": trainer.evaluate()}
    return trainer, metrics


def causal_lm_with_resume(lib: Any, output_dir: str) -> tuple[Any, dict[str, Any]]:
    """run_clm-like: accumulation 2, cosine with warmup, saved at 3; a second Trainer resumes from it."""
    first = lib.Trainer(model=tiny_gpt2(), args=lm_args(lib, output_dir, max_steps=3), train_dataset=lm_rows())
    first.train()
    second = lib.Trainer(model=tiny_gpt2(seed=9), args=lm_args(lib, output_dir), train_dataset=lm_rows())
    result = second.train(resume_from_checkpoint=True)
    return second, {"train": result.metrics}


def weighted_loss_trainer(lib: Any) -> Any:
    """A Trainer subclass overriding ``compute_loss`` with HF's signature (class-weighted cross entropy)."""

    class WeightedLossTrainer(lib.Trainer):  # type: ignore[misc,name-defined]
        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            weight = torch.tensor([1.0, 3.0])
            loss = torch.nn.functional.cross_entropy(outputs.logits, labels, weight=weight)
            return (loss, outputs) if return_outputs else loss

    return WeightedLossTrainer


def compute_loss_override(lib: Any, output_dir: str) -> tuple[Any, dict[str, Any]]:
    tokenizer = local_tokenizer()
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=len(WORDS) + 2,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=16,
            num_labels=2,
        )
    )
    rows = [{**tokenizer(r["text"]), "labels": r["label"]} for r in sentences(32, 3)]
    args = lib.TrainingArguments(
        output_dir,
        per_device_train_batch_size=8,
        max_steps=6,
        logging_steps=1,
        gradient_accumulation_steps=2,
        save_strategy="no",
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
    )
    trainer = weighted_loss_trainer(lib)(
        model=model, args=args, train_dataset=rows, data_collator=DataCollatorWithPadding(tokenizer)
    )
    return trainer, {"train": trainer.train().metrics}


@dataclasses.dataclass
class ModelArguments:
    hidden: int = dataclasses.field(default=16, metadata={"help": "width of the tiny model"})


def parse_command_line(lib: Any, argv: list[str]) -> tuple[ModelArguments, Any]:
    """``HfArgumentParser((ModelArguments, TrainingArguments))`` over a command line, as HF scripts do."""
    parser = HfArgumentParser((ModelArguments, lib.TrainingArguments))
    model_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    return model_args, training_args
