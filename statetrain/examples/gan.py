"""A GAN as a loop: two optimize states, two optimizers alternating, one global step per round.

The default machine's ``accumulate`` state is replaced by four states, in order::

    step -> discriminate -> optimize_discriminator -> generate -> optimize (the default one)

``discriminate`` backpropagates the discriminator's loss on a real batch and a detached fake one;
``optimize_discriminator`` steps the discriminator's own optimizer and schedule; ``generate``
backpropagates the generator's loss through the (frozen for this step) discriminator; the
default ``optimize`` state then steps the Trainer's optimizer (the generator's), counts the step
and fires ``on_step_end``. The discriminator's optimizer and schedule are registered as
checkpointables, so every checkpoint holds both optimizers and both schedules, and a resumed run
is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from statetrain.engine.default_machine import default_machine
from statetrain.engine.machine import Guard, MachineSpec, Transition
from statetrain.events.event import Event
from statetrain.optim.schedulers import get_scheduler
from statetrain.states.base import State

if TYPE_CHECKING:
    from statetrain.context.run import Run

__all__ = ["DiscriminateState", "GenerateState", "TinyGAN", "gan_machine", "gaussian_rows"]


class TinyGAN(nn.Module):
    """A generator and a discriminator in one module, so the Trainer moves, saves and loads both."""

    def __init__(self, latent: int = 4, features: int = 2, hidden: int = 16) -> None:
        super().__init__()
        self.latent = latent
        self.generator = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, features))
        self.discriminator = nn.Sequential(nn.Linear(features, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, real: torch.Tensor) -> torch.Tensor:
        """The discriminator's logits for ``real``; names the data column the Trainer keeps."""
        return self.discriminator(real)

    def sample(self, count: int) -> torch.Tensor:
        """``count`` generated points; draws the noise from torch's global generator."""
        device = next(self.parameters()).device
        return self.generator(torch.randn(count, self.latent, device=device))


def gaussian_rows(
    count: int, mean: float = 3.0, std: float = 0.5, features: int = 2, seed: int = 0
) -> list[dict[str, Any]]:
    """The "real" data: points of a Gaussian blob away from the generator's starting output."""
    generator = torch.Generator().manual_seed(seed)
    points = mean + std * torch.randn(count, features, generator=generator)
    return [{"real": point} for point in points]


def _gan(run: Run) -> TinyGAN:
    model = run.accelerator.unwrap_model(run.model)
    if not isinstance(model, TinyGAN):
        raise TypeError(f"the GAN machine needs a TinyGAN-like model, got {type(model).__name__}")
    return model


_bce = nn.functional.binary_cross_entropy_with_logits


class DiscriminateState(State):
    """Forward and backward of the discriminator's loss; the generator gets no gradient."""

    name = "discriminate"
    reads = ("window", "model")
    writes = ("custom_state.discriminate",)
    fires: ClassVar[tuple[Event, ...]] = ()

    def setup(self, run: Run) -> None:
        if run.plan.gradient_accumulation_steps != 1:
            raise ValueError("the GAN machine updates on every batch: gradient_accumulation_steps must be 1")
        model = _gan(run)
        args = run.args
        optimizer = torch.optim.Adam(
            model.discriminator.parameters(), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2)
        )
        schedule = get_scheduler(
            args.lr_scheduler_type,
            optimizer,
            num_warmup_steps=args.get_warmup_steps(run.plan.max_steps),
            num_training_steps=run.plan.max_steps,
            scheduler_specific_kwargs=args.lr_scheduler_kwargs,
        )
        run.register_checkpointable("discriminator_optimizer", optimizer)
        run.register_checkpointable("discriminator_scheduler", schedule)

    def run(self, run: Run) -> None:
        model = _gan(run)
        real = run.window[run.window_pos]["real"]
        with torch.no_grad():
            fake = model.sample(real.shape[0])
        real_logits = model.discriminator(real)
        fake_logits = model.discriminator(fake)
        loss = _bce(real_logits, torch.ones_like(real_logits)) + _bce(fake_logits, torch.zeros_like(fake_logits))
        loss.backward()
        run.custom_state(self.name)["last_loss"] = float(loss.detach())


class OptimizeDiscriminatorState(State):
    """The discriminator's update: its optimizer, its schedule; no global step is counted here."""

    name = "optimize_discriminator"
    reads = ("checkpointables.discriminator_optimizer", "checkpointables.discriminator_scheduler")
    writes = ("model.discriminator",)

    def run(self, run: Run) -> None:
        optimizer = run.checkpointables["discriminator_optimizer"]
        optimizer.step()
        run.checkpointables["discriminator_scheduler"].step()
        optimizer.zero_grad(set_to_none=True)


class GenerateState(State):
    """Forward and backward of the generator's loss; closes the window for the default ``optimize``.

    The loss flows through the discriminator, whose gradients are dropped at once so that the
    generator's update (and its gradient clipping) sees only the generator.
    """

    name = "generate"
    reads = ("window", "model")
    writes = ("tr_loss", "engine.batches_in_epoch", "window_pos", "window_complete")

    def run(self, run: Run) -> None:
        model = _gan(run)
        real = run.window[run.window_pos]["real"]
        fake_logits = model.discriminator(model.sample(real.shape[0]))
        loss = _bce(fake_logits, torch.ones_like(fake_logits))
        loss.backward()
        model.discriminator.zero_grad(set_to_none=True)
        assert run.tr_loss is not None
        run.tr_loss += loss.detach()
        run.engine.batches_in_epoch += 1
        run.window_pos += 1
        run.epoch_had_batches = True
        run.window_complete = True


def gan_machine() -> MachineSpec:
    """The default machine with ``accumulate`` replaced by the four GAN states."""
    has_batch = Guard("window has a batch", lambda run: run.window_pos < len(run.window))
    return (
        default_machine()
        .without_state("accumulate")
        .with_state(DiscriminateState())
        .with_state(OptimizeDiscriminatorState())
        .with_state(GenerateState())
        .with_transitions(
            [
                Transition("step", "next_batch", "discriminate", (has_batch,)),
                Transition("discriminate", "update_discriminator", "optimize_discriminator"),
                Transition("optimize_discriminator", "train_generator", "generate"),
                Transition("generate", "update", "optimize"),
            ]
        )
    )
