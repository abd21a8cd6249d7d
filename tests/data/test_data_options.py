"""Data options: the padding collator rule, length grouping, DataLoader plumbing, full determinism."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from statetrain import Trainer, TrainingArguments
from statetrain.data.batches import DETERMINISM_ENV, default_data_collator
from statetrain.data.padding import DataCollatorWithPadding
from statetrain.data.samplers import LengthGroupedSampler, get_length_grouped_indices
from tests.helpers import TinyRegressor, regression_rows


def args(tmp_path: Path, **overrides: Any) -> TrainingArguments:
    options: dict[str, Any] = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        max_steps=3,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=1,
        seed=5,
    )
    options.update(overrides)
    return TrainingArguments(**options)


class PaddingTokenizer:
    """The two things HF's padding collator uses from a tokenizer: ``pad`` and ``model_input_names``."""

    model_input_names = ["input_ids", "attention_mask"]

    def pad(self, features: list[dict[str, Any]], padding: Any = True, return_tensors: Any = None, **_: Any) -> Any:
        longest = max(len(f["input_ids"]) for f in features)
        ids = torch.zeros(len(features), longest, dtype=torch.long)
        mask = torch.zeros(len(features), longest, dtype=torch.long)
        for row, feature in enumerate(features):
            ids[row, : len(feature["input_ids"])] = torch.tensor(feature["input_ids"])
            mask[row, : len(feature["input_ids"])] = 1
        batch: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        for key in features[0].keys() - {"input_ids", "attention_mask"}:
            batch[key] = torch.tensor([f[key] for f in features])
        return batch


class SequenceClassifier(nn.Module):
    """Mean-pooled embeddings; records the padded length of every batch it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.head = nn.Linear(8, 3)
        self.seen_lengths: list[int] = []

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None
    ) -> dict[str, Any]:
        self.seen_lengths.append(input_ids.shape[1])
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1)
        logits = self.head(pooled)
        out: dict[str, Any] = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


def ragged_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 12, (n,), generator=g).tolist()
    return [
        {"input_ids": torch.randint(1, 20, (length,), generator=g).tolist(), "label": i % 3}
        for i, length in enumerate(lengths)
    ]


# --- the default collator -----------------------------------------------------------------------


def test_a_tokenizer_as_processing_class_pads_batches_of_uneven_length(tmp_path: Path) -> None:
    model = SequenceClassifier()
    trainer = Trainer(
        model=model, args=args(tmp_path), train_dataset=ragged_rows(12), processing_class=PaddingTokenizer()
    )
    assert isinstance(trainer.data_collator, DataCollatorWithPadding)
    assert trainer.train().global_step == 3
    assert Trainer(model=TinyRegressor(), args=args(tmp_path)).data_collator is default_data_collator


def test_the_padding_collator_renames_labels_as_hf() -> None:
    collator = DataCollatorWithPadding(PaddingTokenizer())
    batch = collator([{"input_ids": [1, 2, 3], "label": 1}, {"input_ids": [4], "label": 0}])
    assert sorted(batch) == ["attention_mask", "input_ids", "labels"]
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]] and batch["labels"].tolist() == [1, 0]
    batch = collator([{"input_ids": [1], "label_ids": 2}])
    assert "label_ids" not in batch and batch["labels"].tolist() == [2]


def test_a_multimodal_processor_keeps_the_default_collator(tmp_path: Path) -> None:
    ProcessorMixin = type("ProcessorMixin", (), {})  # matched by name, as transformers' is
    processor = type("Processor", (ProcessorMixin, PaddingTokenizer), {})()
    trainer = Trainer(model=TinyRegressor(), args=args(tmp_path), processing_class=processor)
    assert trainer.data_collator is default_data_collator


def test_padding_matches_transformers_with_a_real_tokenizer(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[PAD]": 0, "[UNK]": 1, **{word: i + 2 for i, word in enumerate("abcdef")}}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")
    features = [{**tokenizer(text), "label": i} for i, text in enumerate(["a b c", "d", "e f a b"])]
    ours = Trainer(model=SequenceClassifier(), args=args(tmp_path), processing_class=tokenizer).data_collator(features)
    hf_trainer = transformers.Trainer(
        model=SequenceClassifier(),
        args=transformers.TrainingArguments(str(tmp_path), use_cpu=True, report_to="none"),
        processing_class=tokenizer,
    )
    theirs = hf_trainer.data_collator(features)
    assert isinstance(hf_trainer.data_collator, transformers.DataCollatorWithPadding)
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key
    assert tokenizer.deprecation_warnings.get("Asking-to-pad-a-fast-tokenizer", False) is False


# --- group_by_length ------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "batch_size"), [(7, 2), (40, 4), (1000, 4), (1003, 8), (5000, 3)])
def test_length_grouped_indices_match_hf_for_the_same_generator_seed(n: int, batch_size: int) -> None:
    trainer_pt_utils = pytest.importorskip("transformers.trainer_pt_utils")
    lengths = torch.randint(1, 500, (n,), generator=torch.Generator().manual_seed(n)).tolist()
    ours = list(LengthGroupedSampler(batch_size, lengths=lengths, generator=torch.Generator().manual_seed(3)))
    theirs = list(
        trainer_pt_utils.LengthGroupedSampler(batch_size, lengths=lengths, generator=torch.Generator().manual_seed(3))
    )
    assert ours == theirs and sorted(ours) == list(range(n))
    assert lengths[ours[0]] == max(lengths)  # the longest example opens the first batch


def test_megabatches_are_sorted_longest_first() -> None:
    lengths = list(range(100))
    indices = get_length_grouped_indices(lengths, batch_size=5, generator=torch.Generator().manual_seed(0))
    megabatch = 5 * 5  # 100 // (5 * 4) batches per megabatch: at least 4 megabatches
    for start in range(0, 100, megabatch):
        chunk = [lengths[i] for i in indices[start : start + megabatch]][1:]  # the first may be swapped
        assert chunk == sorted(chunk, reverse=True)


def test_trainer_groups_by_length_like_hf(tmp_path: Path) -> None:
    rows = ragged_rows(60)
    options: dict[str, Any] = dict(
        per_device_train_batch_size=2, gradient_accumulation_steps=3, train_sampling_strategy="group_by_length"
    )
    ours = Trainer(model=SequenceClassifier(), args=args(tmp_path, **options), train_dataset=rows)._get_train_sampler()
    assert isinstance(ours, LengthGroupedSampler) and ours.batch_size == 6
    transformers = pytest.importorskip("transformers")
    hf_args = transformers.TrainingArguments(str(tmp_path), use_cpu=True, report_to="none", **options)
    theirs = transformers.Trainer(model=SequenceClassifier(), args=hf_args, train_dataset=rows)._get_train_sampler()
    torch.manual_seed(9)
    our_order = list(ours)
    torch.manual_seed(9)
    assert our_order == list(theirs)


def test_group_by_length_puts_the_longest_batch_first_in_training(tmp_path: Path) -> None:
    rows = ragged_rows(40, seed=2)
    model = SequenceClassifier()
    with pytest.warns(FutureWarning, match="group_by_length"):
        training_args = args(tmp_path, group_by_length=True, max_steps=-1, num_train_epochs=1)
    Trainer(model=model, args=training_args, train_dataset=rows, processing_class=PaddingTokenizer()).train()
    longest = max(len(r["input_ids"]) for r in rows)
    assert model.seen_lengths[0] == longest
    assert len(model.seen_lengths) == 20


class ColumnDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """The parts of ``datasets.Dataset`` the Trainer reads: columns by name, rows by index."""

    def __init__(self, columns: dict[str, list[Any]]) -> None:
        self.columns = columns

    @property
    def column_names(self) -> list[str]:
        return list(self.columns)

    def remove_columns(self, names: list[str]) -> ColumnDataset:
        return ColumnDataset({k: v for k, v in self.columns.items() if k not in names})

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            return self.columns[key]
        return {name: values[key] for name, values in self.columns.items()}


def test_lengths_come_from_the_length_column_even_after_column_removal(tmp_path: Path) -> None:
    rows = ragged_rows(12)
    declared = [100 - i for i in range(12)]  # not the true lengths: proves the column is what is read
    dataset = ColumnDataset(
        {
            "input_ids": [r["input_ids"] for r in rows],
            "label": [r["label"] for r in rows],
            "size": declared,
        }
    )
    trainer = Trainer(
        model=SequenceClassifier(),
        args=args(tmp_path, train_sampling_strategy="group_by_length", length_column_name="size"),
        train_dataset=dataset,
        processing_class=PaddingTokenizer(),
    )
    loader = trainer.get_train_dataloader()
    removed = loader.dataset
    assert isinstance(removed, ColumnDataset) and "size" not in removed.column_names  # forward does not take it
    sampler = trainer._get_train_sampler(removed)
    assert isinstance(sampler, LengthGroupedSampler) and sampler.lengths == declared


def test_group_by_length_needs_lengths_it_can_read(tmp_path: Path) -> None:
    trainer = Trainer(
        model=TinyRegressor(),
        args=args(tmp_path, train_sampling_strategy="group_by_length"),
        train_dataset=regression_rows(8),
    )
    with pytest.raises(ValueError, match="length_column_name"):
        trainer.train()


def test_group_by_length_on_an_iterable_dataset_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Stream(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
        def __iter__(self) -> Iterator[dict[str, Any]]:
            return iter(regression_rows(64))

    trainer = Trainer(
        model=TinyRegressor(), args=args(tmp_path, train_sampling_strategy="group_by_length"), train_dataset=Stream()
    )
    with caplog.at_level(logging.WARNING, logger="statetrain"):
        assert trainer._get_train_sampler() is None
    assert "group_by_length' is ignored" in caplog.text
    assert trainer.train().global_step == 3  # examples in the stream's own order


def test_iterable_dataset_without_max_steps_names_max_steps(tmp_path: Path) -> None:
    class Stream(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
        def __iter__(self) -> Iterator[dict[str, Any]]:
            return iter(regression_rows(8))

    trainer = Trainer(model=TinyRegressor(), args=args(tmp_path, max_steps=-1), train_dataset=Stream())
    with pytest.raises(ValueError, match="max_steps must be a positive number"):
        trainer.train()


# --- DataLoader options -----------------------------------------------------------------------------


def test_drop_last_drops_the_short_batch(tmp_path: Path) -> None:
    options = dict(per_device_train_batch_size=4, max_steps=-1, num_train_epochs=1)
    kept = Trainer(model=TinyRegressor(), args=args(tmp_path, **options), train_dataset=regression_rows(10))
    dropped = Trainer(
        model=TinyRegressor(),
        args=args(tmp_path, dataloader_drop_last=True, **options),
        train_dataset=regression_rows(10),
    )
    assert (kept.train().global_step, dropped.train().global_step) == (3, 2)


def test_persistent_workers_need_workers(tmp_path: Path) -> None:
    trainer = Trainer(
        model=TinyRegressor(), args=args(tmp_path, dataloader_persistent_workers=True), train_dataset=regression_rows(8)
    )
    with pytest.raises(ValueError, match=r"dataloader_persistent_workers=True .* dataloader_num_workers=0"):
        trainer.train()


def test_worker_options_reach_the_dataloader(tmp_path: Path) -> None:
    trainer = Trainer(
        model=TinyRegressor(),
        args=args(
            tmp_path,
            dataloader_num_workers=2,
            dataloader_prefetch_factor=3,
            dataloader_persistent_workers=True,
            dataloader_multiprocessing_context="spawn",
        ),
        train_dataset=regression_rows(16),
    )
    loader = trainer.get_train_dataloader()
    assert (loader.num_workers, loader.prefetch_factor, loader.persistent_workers) == (2, 3, True)
    assert loader.multiprocessing_context.get_start_method() == "spawn"
    assert trainer.train().global_step == 3


@pytest.mark.parametrize("pin", [True, False])
def test_pin_memory_reaches_the_dataloader(tmp_path: Path, pin: bool) -> None:
    training_args = args(tmp_path)
    training_args.dataloader_pin_memory = pin  # use_cpu turns it off at construction; set it back
    trainer = Trainer(model=TinyRegressor(), args=training_args, train_dataset=regression_rows(8))
    assert trainer.get_train_dataloader().pin_memory is pin


# --- full determinism -------------------------------------------------------------------------------


def test_full_determinism_sets_hf_environment_and_deterministic_kernels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in DETERMINISM_ENV:
        monkeypatch.delenv(name, raising=False)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        torch.use_deterministic_algorithms(False)
        Trainer(model=TinyRegressor(), args=args(tmp_path))
        assert not torch.are_deterministic_algorithms_enabled() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
        Trainer(model=TinyRegressor(), args=args(tmp_path, full_determinism=True))
        assert torch.are_deterministic_algorithms_enabled()
        assert {name: os.environ.get(name) for name in DETERMINISM_ENV} == DETERMINISM_ENV
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
