"""Model options: activation checkpointing, torch.compile, NEFTune, bare base models, label names."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from statetrain import Trainer, TrainingArguments
from statetrain.trainer.model_options import neftune_post_forward_hook
from tests.helpers import TinyRegressor, TokenModel, regression_rows, token_rows


def args(tmp_path: Path, **overrides: Any) -> TrainingArguments:
    options: dict[str, Any] = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=3,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=1,
        seed=7,
    )
    options.update(overrides)
    return TrainingArguments(**options)


def params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


# --- activation checkpointing ---------------------------------------------------------------------


class CheckpointedRegressor(TinyRegressor):
    """Counts forward passes of its body: with checkpointing, backward runs the body a second time."""

    def __init__(self) -> None:
        super().__init__()
        self.body_calls = 0
        self.enabled_with: dict[str, Any] | None = None
        self._checkpoint: Any = None

    def activation_checkpointing_enable(
        self,
        activation_checkpointing_kwargs: dict[str, Any] | None = None,
        every_n_layers: int = 1,
        offload: bool = False,
    ) -> None:
        self.enabled_with = {
            "activation_checkpointing_kwargs": activation_checkpointing_kwargs,
            "every_n_layers": every_n_layers,
            "offload": offload,
        }
        self._checkpoint = functools.partial(
            checkpoint, **(activation_checkpointing_kwargs or {"use_reentrant": False})
        )

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        self.body_calls += 1
        return self.net(x)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        logits = self._checkpoint(self._body, x) if self._checkpoint and self.training else self._body(x)
        assert labels is not None
        return {"logits": logits, "loss": nn.functional.cross_entropy(logits, labels)}


def test_activation_checkpointing_recomputes_in_backward_with_the_given_kwargs(tmp_path: Path) -> None:
    plain, checkpointed = CheckpointedRegressor(), CheckpointedRegressor()
    checkpointed.load_state_dict(plain.state_dict())
    Trainer(model=plain, args=args(tmp_path), train_dataset=regression_rows(16)).train()
    options = {"use_reentrant": False, "every_n_layers": 2}
    trainer = Trainer(
        model=checkpointed,
        args=args(tmp_path, activation_checkpointing=True, activation_checkpointing_kwargs=options),
        train_dataset=regression_rows(16),
    )
    trainer.train()
    assert checkpointed.enabled_with == {
        "activation_checkpointing_kwargs": {"use_reentrant": False},
        "every_n_layers": 2,
        "offload": False,
    }
    assert (plain.body_calls, checkpointed.body_calls) == (3, 6)  # recomputed once per step
    for name, value in params(plain).items():
        torch.testing.assert_close(params(checkpointed)[name], value, rtol=0, atol=1e-7)


def test_gradient_checkpointing_is_the_deprecated_spelling(tmp_path: Path) -> None:
    model = CheckpointedRegressor()
    with pytest.warns(FutureWarning, match="gradient_checkpointing"):
        training_args = args(
            tmp_path,
            gradient_checkpointing=True,
            gradient_checkpointing_kwargs={"use_reentrant": False, "preserve_rng_state": False},
        )
    Trainer(model=model, args=training_args, train_dataset=regression_rows(16)).train()
    assert model.enabled_with is not None
    assert model.enabled_with["activation_checkpointing_kwargs"] == {
        "use_reentrant": False,
        "preserve_rng_state": False,
    }


def test_a_model_that_cannot_checkpoint_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"TinyRegressor cannot recompute its activations"):
        Trainer(model=TinyRegressor(), args=args(tmp_path, activation_checkpointing=True))

    class Refusing(CheckpointedRegressor):
        supports_gradient_checkpointing = False

    with pytest.raises(ValueError, match="Refusing does not support activation checkpointing"):
        Trainer(model=Refusing(), args=args(tmp_path, activation_checkpointing=True))


def test_the_deprecated_enable_method_is_still_called_with_a_warning(tmp_path: Path) -> None:
    class OldStyle(TinyRegressor):
        def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: Any = None) -> None:
            self.called_with = gradient_checkpointing_kwargs

    model = OldStyle()
    trainer = Trainer(model=model, args=args(tmp_path, activation_checkpointing=True), train_dataset=regression_rows(8))
    with pytest.warns(FutureWarning, match="only defines `gradient_checkpointing_enable`"):
        trainer.train()
    assert model.called_with is None  # no kwargs given; every_n_layers/offload left out: it takes neither


def tiny_gpt2(**overrides: Any) -> Any:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=32,
        n_positions=16,
        n_embd=16,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        **overrides,
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config)


def gpt2_rows(n: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 32, (n, 8), generator=g)
    return [{"input_ids": row, "labels": row.clone()} for row in ids]


def test_a_transformers_model_checkpoints_and_trains_to_the_same_parameters(tmp_path: Path) -> None:
    model = tiny_gpt2()
    reference = copy.deepcopy(model)
    Trainer(model=reference, args=args(tmp_path), train_dataset=gpt2_rows(12)).train()
    trainer = Trainer(model=model, args=args(tmp_path, activation_checkpointing=True), train_dataset=gpt2_rows(12))
    trainer.train()
    assert model.is_activation_checkpointing and not reference.is_activation_checkpointing
    for name, value in params(reference).items():
        torch.testing.assert_close(params(model)[name], value, rtol=1e-5, atol=1e-6)


# --- torch.compile ----------------------------------------------------------------------------------


def test_torch_compile_compiles_the_prepared_model_with_backend_and_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    real_compile = torch.compile

    def recording_compile(model: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real_compile(model, **kwargs)

    monkeypatch.setattr(torch, "compile", recording_compile)
    model = TinyRegressor()
    reference = copy.deepcopy(model)
    Trainer(model=reference, args=args(tmp_path), train_dataset=regression_rows(16)).train()
    assert calls == []
    training_args = args(tmp_path, torch_compile_backend="eager", torch_compile_mode="reduce-overhead")
    assert training_args.torch_compile  # the backend alone turns it on, as in HF
    trainer = Trainer(model=model, args=training_args, train_dataset=regression_rows(16))
    trainer.train()
    assert calls == [{"backend": "eager", "mode": "reduce-overhead", "dynamic": None}]
    assert isinstance(trainer.model_wrapped, torch._dynamo.eval_frame.OptimizedModule)
    assert trainer.model is model  # the plain module stays the one saved and evaluated
    for name, value in params(reference).items():
        torch.testing.assert_close(params(model)[name], value, rtol=0, atol=1e-7)


# --- NEFTune ----------------------------------------------------------------------------------------


class EmbeddingModel(TokenModel):
    """TokenModel with HF's embedding accessor; records what its embedding layer returned."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        super().__init__()
        self.fail_on_call = fail_on_call
        self.calls = 0
        self.noise: list[tuple[bool, float]] = []  # (training, largest |noise|) per forward

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("forward failed on purpose")
        clean = nn.functional.embedding(input_ids, self.embed.weight)
        self.noise.append((self.training, float((self.embed(input_ids) - clean).detach().abs().max())))
        return super().forward(input_ids, labels, **kwargs)


def test_neftune_adds_noise_only_while_training_and_is_removed_after(tmp_path: Path) -> None:
    model = EmbeddingModel()
    trainer = Trainer(
        model=model,
        args=args(tmp_path, neftune_noise_alpha=5.0, eval_strategy="steps", eval_steps=2, per_device_eval_batch_size=4),
        train_dataset=token_rows(12),
        eval_dataset=token_rows(4),
    )
    trainer.train()
    bound = 5.0 / (10 * 12) ** 0.5  # alpha / sqrt(sequence length * hidden size)
    training = [noise for is_training, noise in model.noise if is_training]
    evaluating = [noise for is_training, noise in model.noise if not is_training]
    assert len(training) == 3 and all(0 < noise <= bound + 1e-6 for noise in training)
    assert evaluating and all(noise == 0 for noise in evaluating)
    assert not model.embed._forward_hooks and not hasattr(model.embed, "neftune_noise_alpha")


def test_neftune_hook_is_removed_when_training_fails(tmp_path: Path) -> None:
    model = EmbeddingModel(fail_on_call=2)
    trainer = Trainer(model=model, args=args(tmp_path, neftune_noise_alpha=5.0), train_dataset=token_rows(12))
    with pytest.raises(RuntimeError, match="failed on purpose"):
        trainer.train()
    assert model.noise and model.noise[0][1] > 0  # the first step was noisy
    assert not model.embed._forward_hooks and not hasattr(model.embed, "neftune_noise_alpha")


def test_neftune_noise_matches_hf_for_the_same_seed() -> None:
    neftune = pytest.importorskip("transformers.integrations.neftune")
    embedding = nn.Embedding(16, 12)
    embedding.neftune_noise_alpha = 5.0  # type: ignore[assignment]
    output = embedding(torch.randint(0, 16, (3, 7)))
    torch.manual_seed(1)
    ours = neftune_post_forward_hook(embedding, (), output)
    torch.manual_seed(1)
    theirs = neftune.neftune_post_forward_hook(embedding, (), output)
    assert torch.equal(ours, theirs) and not torch.equal(ours, output)


def test_neftune_needs_input_embeddings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="TinyRegressor has no input embeddings"):
        Trainer(model=TinyRegressor(), args=args(tmp_path, neftune_noise_alpha=5.0))


# --- models the Trainer cannot train, and label names -----------------------------------------------


def test_a_bare_transformers_base_model_is_refused_with_its_name(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=32, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    with pytest.raises(ValueError, match=r"GPT2Model cannot be trained as is: it is a base model without a head"):
        Trainer(model=transformers.GPT2Model(config), args=args(tmp_path))
    Trainer(model=transformers.GPT2LMHeadModel(config), args=args(tmp_path))  # a head: accepted


def test_a_class_merely_named_like_a_base_model_is_not_refused(tmp_path: Path) -> None:
    GPT2Model = type("GPT2Model", (TinyRegressor,), {})  # the name is the point
    assert GPT2Model.__module__ != "transformers"
    Trainer(model=GPT2Model(), args=args(tmp_path))


class PlainQuestionAnswering(nn.Module):
    def forward(self, x: Any, start_positions: Any = None, end_positions: Any = None) -> Any:
        return x


class Tagger(nn.Module):
    def forward(self, input_ids: Any, labels: Any = None, label_mask: Any = None, attention_mask: Any = None) -> Any:
        return input_ids


@pytest.mark.parametrize(
    ("model_cls", "expected"),
    [
        (TinyRegressor, ["labels"]),
        (Tagger, ["labels", "label_mask"]),
        (PlainQuestionAnswering, ["start_positions", "end_positions"]),
    ],
)
def test_label_names_come_from_the_forward_signature_as_in_hf(
    tmp_path: Path, model_cls: type[nn.Module], expected: list[str]
) -> None:
    assert Trainer(model=model_cls(), args=args(tmp_path)).label_names == expected
    assert Trainer(model=model_cls(), args=args(tmp_path, label_names=["target"])).label_names == ["target"]
    transformers = pytest.importorskip("transformers")
    hf = transformers.Trainer(
        model=model_cls(), args=transformers.TrainingArguments(str(tmp_path), use_cpu=True, report_to="none")
    )
    assert hf.label_names == expected
