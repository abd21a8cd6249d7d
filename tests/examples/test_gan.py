"""The GAN example: two optimize states alternating, one global step per round, bit-exact resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from statetrain import Trainer, TrainingArguments
from statetrain.checkpoint.store import verify_checkpoint
from statetrain.examples.gan import TinyGAN, gan_machine, gaussian_rows
from statetrain.testing import assert_resumes_bit_exactly

MEAN = 3.0


def make_trainer(output_dir: str, epochs: int = 3, lr: float = 0.01) -> Trainer:
    torch.manual_seed(0)
    gan = TinyGAN()
    args = TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=16,
        num_train_epochs=epochs,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=2,
        save_strategy="steps",
        save_steps=7,
        logging_steps=4,
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        seed=3,
    )
    generator_optimizer = torch.optim.Adam(gan.generator.parameters(), lr=lr, betas=(0.5, 0.999))
    return Trainer(
        model=gan,
        args=args,
        train_dataset=gaussian_rows(96, mean=MEAN),
        machine=gan_machine(),
        optimizers=(generator_optimizer, None),
    )


def test_both_optimizers_step_once_per_round_and_the_generator_learns(tmp_path: Path) -> None:
    trainer = make_trainer(str(tmp_path), epochs=8)
    gan = trainer.model
    assert isinstance(gan, TinyGAN)
    torch.manual_seed(1)
    start_gap = (gan.sample(512).mean(0) - MEAN).abs().mean().item()
    trainer.train()
    run = trainer.run_context
    steps = trainer.state.global_step
    assert steps == 8 * 6  # 96 rows / 16 per batch, 8 epochs: one step per generator+discriminator round
    d_optimizer = run.checkpointables["discriminator_optimizer"]
    g_optimizer = run.optimizer.optimizer if hasattr(run.optimizer, "optimizer") else run.optimizer
    assert {int(s["step"]) for s in d_optimizer.state.values()} == {steps}
    assert {int(s["step"]) for s in g_optimizer.state.values()} == {steps}
    # each optimizer updates only its own network
    d_params = {id(p) for p in gan.discriminator.parameters()}
    assert {id(p) for p in d_optimizer.state} == d_params
    assert not ({id(p) for p in g_optimizer.state} & d_params)
    # both schedules advanced once per round
    assert run.checkpointables["discriminator_scheduler"].last_epoch == steps
    assert run.lr_scheduler.last_epoch == steps
    torch.manual_seed(1)
    end_gap = (gan.sample(512).mean(0) - MEAN).abs().mean().item()
    assert end_gap < start_gap / 2, (start_gap, end_gap)


def test_every_checkpoint_holds_both_optimizers_and_schedules(tmp_path: Path) -> None:
    make_trainer(str(tmp_path), epochs=2).train()
    checkpoint = tmp_path / "checkpoint-7"
    manifest = verify_checkpoint(checkpoint)
    names = (
        set(manifest["files"]) if isinstance(manifest.get("files"), dict) else {p.name for p in checkpoint.iterdir()}
    )
    for stem in ("optimizer", "scheduler", "extra-discriminator_optimizer", "extra-discriminator_scheduler"):
        assert f"{stem}.safetensors" in names and f"{stem}.json" in names


@pytest.mark.parametrize("cut", [7, 14])
def test_resumes_bit_exactly_from_a_checkpoint_taken_in_the_gan_states(tmp_path: Path, cut: int) -> None:
    result = assert_resumes_bit_exactly(lambda d: make_trainer(d, epochs=3), cut, tmp_path)
    assert result.resumed.state.global_step == 18


def test_gradient_accumulation_is_refused_by_name(tmp_path: Path) -> None:
    trainer = make_trainer(str(tmp_path))
    trainer.args.gradient_accumulation_steps = 2
    with pytest.raises(ValueError, match="gradient_accumulation_steps must be 1"):
        trainer.train()
