"""Seq2SeqTrainer against transformers.Seq2SeqTrainer on tiny T5 and BART built from configs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

import statetrain  # noqa: E402


def tiny_t5() -> Any:
    config = transformers.T5Config(
        vocab_size=32,
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=2,
        num_heads=2,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    torch.manual_seed(0)
    return transformers.T5ForConditionalGeneration(config)


def tiny_bart() -> Any:
    config = transformers.BartConfig(
        vocab_size=32,
        d_model=16,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_eos_token_id=2,
    )
    torch.manual_seed(0)
    return transformers.BartForConditionalGeneration(config)


def rows(n: int = 6, length: int = 7) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        ids = torch.randint(3, 32, (length,), generator=generator)
        out.append(
            {"input_ids": ids, "attention_mask": torch.ones(length, dtype=torch.long), "labels": ids.flip(0)[:5]}
        )
    return out


def exact_match(prediction: Any) -> dict[str, float]:
    preds, labels = prediction.predictions, prediction.label_ids
    return {"token_match": float(np.mean(preds[:, : labels.shape[1]] == labels))}


def run(module: Any, make_model: Any, tmp: str, **extra: Any) -> tuple[dict[str, float], Any]:
    args = module.Seq2SeqTrainingArguments(
        tmp,
        per_device_eval_batch_size=4,  # 6 rows: a short last batch, weighted as HF weighs it
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        predict_with_generate=True,
        **extra,
    )
    trainer = module.Seq2SeqTrainer(model=make_model(), args=args, compute_metrics=exact_match)
    metrics = trainer.evaluate(eval_dataset=rows())
    prediction = trainer.predict(rows())
    return metrics, prediction


def comparable(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not any(t in k for t in ("runtime", "per_second", "preparation_time"))}


@pytest.mark.parametrize("make_model", [tiny_t5, tiny_bart], ids=["t5", "bart"])
@pytest.mark.parametrize(
    "options", [{}, {"generation_max_length": 9, "generation_num_beams": 2}], ids=["default", "beams"]
)
def test_generation_equals_transformers(make_model: Any, options: dict[str, Any], tmp_path: Any) -> None:
    ours, our_prediction = run(statetrain, make_model, str(tmp_path / "ours"), **options)
    theirs, their_prediction = run(transformers, make_model, str(tmp_path / "hf"), **options)
    assert comparable(ours) == pytest.approx(comparable(theirs))
    np.testing.assert_array_equal(our_prediction.predictions, their_prediction.predictions)
    np.testing.assert_array_equal(our_prediction.label_ids, their_prediction.label_ids)
    assert comparable(our_prediction.metrics) == pytest.approx(comparable(their_prediction.metrics))


def test_generate_keyword_arguments_override_the_arguments(tmp_path: Any) -> None:
    """max_length given to predict() wins over generation_max_length; ids are padded as HF pads them."""
    predictions = []
    for module in (statetrain, transformers):
        args = module.Seq2SeqTrainingArguments(
            str(tmp_path / module.__name__),
            report_to="none",
            disable_tqdm=True,
            use_cpu=True,
            predict_with_generate=True,
            generation_max_length=12,
        )
        trainer = module.Seq2SeqTrainer(model=tiny_t5(), args=args)
        predictions.append(trainer.predict(rows(), max_length=4).predictions)
    ours, theirs = predictions
    np.testing.assert_array_equal(ours, theirs)
    assert (ours[:, 4:] == 0).all()  # generated 4 tokens, the rest is the pad id


def test_generation_config_argument_replaces_the_models(tmp_path: Any) -> None:
    config = transformers.GenerationConfig(max_length=6, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    args = statetrain.Seq2SeqTrainingArguments(
        str(tmp_path),
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        predict_with_generate=True,
        generation_config=config,
    )
    trainer = statetrain.Seq2SeqTrainer(model=tiny_t5(), args=args)
    assert trainer.model.generation_config.max_length == 6
    assert trainer.model.generation_config is not config
    assert trainer.predict(rows()).predictions.shape[1] == 6
