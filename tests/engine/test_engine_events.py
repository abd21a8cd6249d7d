"""Engine events: subscribers see and replace the batch, outputs and loss, also under overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from statetrain import Event, Trainer, TrainingArguments
from tests.helpers import TinyRegressor, regression_rows


def make_args(tmp_path: Path, **overrides: Any) -> TrainingArguments:
    options: dict[str, Any] = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=0.1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=1,
        optim="adamw_torch",
        seed=7,
    )
    options.update(overrides)
    return TrainingArguments(**options)


def final_params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters()}


def train(tmp_path: Path, trainer_cls: type[Trainer] = Trainer, setup: Any = None, **overrides: Any) -> Trainer:
    torch.manual_seed(0)
    trainer = trainer_cls(
        model=TinyRegressor(), args=make_args(tmp_path, **overrides), train_dataset=regression_rows(24)
    )
    if setup is not None:
        setup(trainer)
    trainer.train()
    return trainer


def test_replacing_the_loss_changes_training(tmp_path: Path) -> None:
    base = train(tmp_path)

    def scale(d: Any) -> None:
        d.loss = d.loss * 0.0

    frozen = train(tmp_path, setup=lambda t: t.on(Event.ON_AFTER_LOSS, scale))
    # A zero loss means zero gradients: AdamW only applies weight decay (0 here), so weights stay.
    torch.manual_seed(0)
    initial = final_params(Trainer(model=TinyRegressor(), args=make_args(tmp_path), train_dataset=regression_rows(24)))
    for name, p in final_params(frozen).items():
        assert torch.equal(p, initial[name]), name
    assert any(not torch.equal(p, initial[n]) for n, p in final_params(base).items())
    # the logged loss is what the subscriber made it
    assert all(e["loss"] == 0.0 for e in frozen.state.log_history if "loss" in e)


def test_replacing_the_batch_is_what_the_model_sees(tmp_path: Path) -> None:
    seen: list[torch.Tensor] = []

    def zero_inputs(d: Any) -> None:
        d.inputs = {**d.inputs, "x": torch.zeros_like(d.inputs["x"])}

    def record(d: Any) -> None:
        seen.append(d.inputs["x"])

    def setup(t: Trainer) -> None:
        t.on(Event.ON_BEFORE_FORWARD, zero_inputs, priority=1)
        t.on(Event.ON_AFTER_FORWARD, record)

    train(tmp_path, setup=setup)
    assert len(seen) == 3 and all(torch.count_nonzero(x) == 0 for x in seen)


def test_replacing_outputs_feeds_the_loss(tmp_path: Path) -> None:
    losses: list[float] = []

    def replace_outputs(d: Any) -> None:
        d.outputs = {**d.outputs, "loss": d.outputs["loss"] * 0 + 5.0}

    def setup(t: Trainer) -> None:
        t.on(Event.ON_AFTER_FORWARD, replace_outputs)
        t.on(Event.ON_AFTER_LOSS, lambda d: losses.append(float(d.loss.detach())))

    train(tmp_path, setup=setup)
    assert losses == [5.0, 5.0, 5.0]


def test_before_backward_replaces_the_differentiated_loss(tmp_path: Path) -> None:
    def setup(t: Trainer) -> None:
        t.on(Event.ON_BEFORE_BACKWARD, lambda d: {"loss": d.loss * 0.0})

    trainer = train(tmp_path, setup=setup)
    torch.manual_seed(0)
    untouched = final_params(
        Trainer(model=TinyRegressor(), args=make_args(tmp_path), train_dataset=regression_rows(24))
    )
    for name, p in final_params(trainer).items():
        assert torch.equal(p, untouched[name]), name
    # but the reported loss is the computed one, not the replaced one
    assert all(e["loss"] > 0 for e in trainer.state.log_history if "loss" in e)


class OverridingTrainer(Trainer):
    """A user subclass overriding both HF hooks; the engine events must still fire."""

    def compute_loss(
        self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        outputs = model(x=inputs["x"])
        loss = torch.nn.functional.cross_entropy(outputs["logits"], inputs["labels"])
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> torch.Tensor:
        model.train()
        loss = self.compute_loss(model, inputs)
        self.accelerator.backward(loss)
        return loss.detach()


def test_events_fire_at_the_boundaries_of_overridden_methods(tmp_path: Path) -> None:
    fired: list[str] = []
    events = [Event.ON_BEFORE_FORWARD, Event.ON_AFTER_LOSS, Event.ON_BEFORE_BACKWARD, Event.ON_AFTER_BACKWARD]

    def setup(t: Trainer) -> None:
        for event in events:
            t.on(event, lambda d: fired.append(d.event.value))

    train(tmp_path, trainer_cls=OverridingTrainer, setup=setup, max_steps=2)
    assert fired == [e.value for e in events] * 2


def test_after_backward_may_replace_the_reported_step_loss(tmp_path: Path) -> None:
    trainer = train(tmp_path, setup=lambda t: t.on(Event.ON_AFTER_BACKWARD, lambda d: {"loss": d.loss * 0 + 2.0}))
    assert [e["loss"] for e in trainer.state.log_history if "loss" in e] == [2.0, 2.0, 2.0]


def test_a_raising_subscriber_stops_training_naming_itself(tmp_path: Path) -> None:
    def broken_hook(d: Any) -> None:
        raise RuntimeError("nope")

    with pytest.raises(Exception, match=r"broken_hook.*on_after_loss"):
        train(tmp_path, setup=lambda t: t.on(Event.ON_AFTER_LOSS, broken_hook))


def test_exception_event_names_the_state(tmp_path: Path) -> None:
    seen: list[str] = []

    def broken(d: Any) -> None:
        raise ValueError("bad step")

    def setup(t: Trainer) -> None:
        t.on(Event.ON_PRE_OPTIMIZER_STEP, broken)
        t.on(Event.ON_EXCEPTION, lambda d: seen.append(d.payload["state_name"]))

    with pytest.raises(Exception, match="on_pre_optimizer_step"):
        train(tmp_path, setup=setup)
    assert seen == ["optimize"]


def test_copy_of_model_untouched_by_events(tmp_path: Path) -> None:
    """Sanity: two plain runs are identical, so the comparisons above are meaningful."""
    a, b = train(tmp_path), train(tmp_path)
    pa, pb = final_params(a), final_params(b)
    assert all(torch.equal(pa[n], pb[n]) for n in pa)
    strip = [{k: v for k, v in e.items() if "runtime" not in k and "per_second" not in k} for e in a.state.log_history]
    again = [{k: v for k, v in e.items() if "runtime" not in k and "per_second" not in k} for e in b.state.log_history]
    assert strip == again
