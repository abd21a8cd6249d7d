"""Label smoothing, tokens seen and FLOPs against the real ``transformers.Trainer``.

A tiny GPT-2 built in code (2 layers, no dropout) on padded rows of uneven length, and the
per-token ``TokenModel``; both take the loss kwargs, the configuration where HF is right.
"""

from __future__ import annotations

import copy
import types
from typing import Any

import pytest
import torch

from statetrain import Trainer, TrainingArguments
from statetrain.optim.loss import LabelSmoother
from tests.helpers import TokenModel, token_rows
from tests.parity.test_hf_training_parity import assert_same_run, run_both

transformers = pytest.importorskip("transformers")

VOCAB, PAD = 64, 0


def tiny_gpt2() -> Any:
    config = transformers.GPT2Config(
        n_layer=2,
        n_head=2,
        n_embd=16,
        vocab_size=VOCAB,
        n_positions=32,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=PAD,
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config)


def lm_rows(n: int, length: int = 12, seed: int = 0) -> list[dict[str, Any]]:
    """Right-padded rows of 3..length real tokens: padding has attention 0 and label -100."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        real = int(torch.randint(3, length + 1, (1,), generator=g))
        ids = torch.full((length,), PAD)
        ids[:real] = torch.randint(3, VOCAB, (real,), generator=g)
        mask = (torch.arange(length) < real).long()
        labels = ids.masked_fill(mask == 0, -100)
        rows.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return rows


SCHEDULE: dict[str, Any] = dict(lr_scheduler_type="cosine", warmup_steps=2, learning_rate=2e-2, max_grad_norm=0.5)


def test_gpt2_label_smoothing_with_accumulation_and_clipping_matches_hf(tmp_path: Any) -> None:
    rows = lm_rows(22, seed=1)  # 6 micro-batches of 4 (last holds 2): windows 2,2,2
    hf, st, hf_rec, st_rec = run_both(tiny_gpt2(), rows, tmp_path, label_smoothing_factor=0.1, **SCHEDULE)
    assert_same_run(hf, st)
    assert hf_rec.trace == st_rec.trace
    norms = [e["grad_norm"] for e in st[0].state.log_history if "grad_norm" in e]
    assert max(norms) > SCHEDULE["max_grad_norm"], "the test must exercise clipping"
    # the smoothing is real: without it the same run logs other losses
    _, plain, _, _ = run_both(tiny_gpt2(), rows, tmp_path / "plain", **SCHEDULE)
    smoothed = [e["loss"] for e in st[0].state.log_history if "loss" in e]
    unsmoothed = [e["loss"] for e in plain[0].state.log_history if "loss" in e]
    assert smoothed != pytest.approx(unsmoothed, abs=1e-3)
    # evaluation goes through compute_loss too, so its loss is smoothed the same way
    hf_eval = hf[0].evaluate(eval_dataset=rows[:9])
    st_eval = st[0].evaluate(eval_dataset=rows[:9])
    assert st_eval["eval_loss"] == pytest.approx(hf_eval["eval_loss"], abs=1e-5)


class ConfiguredTokenModel(TokenModel):
    """HF's Trainer reads ``model.config.problem_type`` when label smoothing is on."""

    def __init__(self) -> None:
        super().__init__()
        self.config = types.SimpleNamespace(problem_type=None)


def test_token_model_label_smoothing_matches_hf(tmp_path: Any) -> None:
    torch.manual_seed(0)
    rows = token_rows(26, seed=7)
    hf, st, _, _ = run_both(ConfiguredTokenModel(), rows, tmp_path, label_smoothing_factor=0.25)
    assert_same_run(hf, st)


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("num_items", [None, 7, "tensor"])
def test_label_smoother_equals_hfs(shift: bool, num_items: Any) -> None:
    from transformers.trainer_pt_utils import LabelSmoother as HFLabelSmoother

    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 6, 11, generator=g)
    labels = torch.randint(0, 11, (3, 6), generator=g)
    labels[0, 4:] = -100
    labels[2, 1:] = -100
    items = torch.tensor(9) if num_items == "tensor" else num_items
    ours = LabelSmoother(epsilon=0.3)({"logits": logits}, labels, shift_labels=shift, num_items_in_batch=items)
    theirs = HFLabelSmoother(epsilon=0.3)({"logits": logits}, labels, shift_labels=shift, num_items_in_batch=items)
    assert torch.allclose(ours, theirs, atol=1e-7, rtol=0)
    assert torch.allclose(
        LabelSmoother(epsilon=0.3)((logits,), labels), HFLabelSmoother(epsilon=0.3)((logits,), labels)
    )


@pytest.mark.parametrize("mode", ["all", "non_padding"])
def test_gpt2_tokens_seen_and_total_flos_match_hf(tmp_path: Any, mode: str) -> None:
    rows = lm_rows(22, seed=2)
    hf, st, _, _ = run_both(tiny_gpt2(), rows, tmp_path, include_num_input_tokens_seen=mode, **SCHEDULE)
    assert_same_run(hf, st)
    hf_state, st_state = hf[0].state, st[0].state
    assert st_state.num_input_tokens_seen == hf_state.num_input_tokens_seen > 0
    real_tokens = sum(int(r["attention_mask"].sum()) for r in rows)
    expected = real_tokens if mode == "non_padding" else sum(r["input_ids"].numel() for r in rows)
    assert st_state.num_input_tokens_seen == expected * 2  # two epochs
    assert st_state.total_flos == hf_state.total_flos > 0
    assert st_state.log_history[-1]["total_flos"] == hf_state.log_history[-1]["total_flos"]
    hf_logs, st_logs = hf_state.log_history, st_state.log_history
    assert [set(e) for e in st_logs] == [set(e) for e in hf_logs]
    assert [e["num_input_tokens_seen"] for e in st_logs] == [e["num_input_tokens_seen"] for e in hf_logs]
    assert "train_tokens_per_second" in st_logs[0]


def test_total_flos_matches_hf_without_token_counting(tmp_path: Any) -> None:
    rows = lm_rows(10, seed=3)
    hf, st, _, _ = run_both(tiny_gpt2(), rows, tmp_path, max_steps=2)
    assert st[0].state.total_flos == hf[0].state.total_flos > 0
    assert all("num_input_tokens_seen" not in e for e in st[0].state.log_history)
    assert st[0].state.num_input_tokens_seen == 0


def test_a_models_own_floating_point_ops_is_used(tmp_path: Any) -> None:
    class Counted(TokenModel):
        def floating_point_ops(self, inputs: dict[str, Any]) -> int:
            return 1000 * inputs["input_ids"].shape[0]

    args = TrainingArguments(
        str(tmp_path),
        per_device_train_batch_size=4,
        num_train_epochs=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(model=Counted(), args=args, train_dataset=token_rows(10))
    trainer.train()
    assert trainer.state.total_flos == 10_000


def test_non_padding_without_a_mask_uses_the_tokenizers_pad_id(tmp_path: Any) -> None:
    class Tokenizer:
        pad_token_id = 0

        def pad(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - never called here
            raise AssertionError

    rows = [{"input_ids": torch.tensor([5, 6, 0, 0]), "labels": torch.tensor([1, 2, -100, -100])} for _ in range(4)]
    args = TrainingArguments(
        str(tmp_path),
        per_device_train_batch_size=2,
        num_train_epochs=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
    )
    from statetrain.data.batches import default_data_collator

    trainer = Trainer(
        model=TokenModel(),
        args=args,
        train_dataset=copy.deepcopy(rows),
        processing_class=Tokenizer(),
        data_collator=default_data_collator,
    )
    trainer.train()
    assert trainer.state.num_input_tokens_seen == 8


def test_label_smoothing_is_disabled_with_a_warning_for_multi_label_models(tmp_path: Any) -> None:
    model = ConfiguredTokenModel()
    model.config.problem_type = "multi_label_classification"
    args = TrainingArguments(str(tmp_path), use_cpu=True, label_smoothing_factor=0.1, report_to="none")
    with pytest.warns(UserWarning, match="multi-label classification"):
        trainer = Trainer(model=model, args=args)
    assert trainer.label_smoother is None
    assert Trainer(model=ConfiguredTokenModel(), args=args).label_smoother == LabelSmoother(epsilon=0.1)
