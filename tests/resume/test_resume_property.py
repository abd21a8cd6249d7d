"""Bit-exact resume as a property: train to N in one go, or stop at k and resume to N: same result.

The interrupted run is stopped by a callback right after its checkpoint at step k (what a
preempted job leaves behind); the resumed run is a fresh Trainer on a fresh model that loads
everything from that checkpoint. Parameters and optimizer tensors must be ``torch.equal``, and
``log_history`` must match apart from timing fields.

Examples: ``STATETRAIN_RESUME_EXAMPLES`` (default 12) sizes the run; CI keeps the default.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from statetrain import Trainer, TrainingArguments
from tests.helpers import RowStream, StopAfter, TinyRegressor, regression_rows

EXAMPLES = int(os.environ.get("STATETRAIN_RESUME_EXAMPLES", "12"))
TIMING = ("runtime", "per_second")


class CursorStream(RowStream):
    """Iterable data that saves its position (state_dict/load_state_dict): restored, not fast-forwarded."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        super().__init__(rows)
        self.cursor = 0

    def __iter__(self) -> Any:
        while self.cursor < len(self.rows):
            self.cursor += 1
            yield self.rows[self.cursor - 1]
        self.cursor = 0

    def state_dict(self) -> dict[str, Any]:
        return {"cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cursor = state["cursor"]


def untimed(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if not k.endswith(TIMING)} for e in history]


def optimizer_tensors(trainer: Trainer) -> list[torch.Tensor]:
    raw = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    return [t for s in raw.state.values() for t in s.values() if isinstance(t, torch.Tensor)]


@st.composite
def configurations(draw: st.DrawFn) -> dict[str, Any]:
    iterable = draw(st.booleans())
    rows = draw(st.integers(6, 30))
    batch = draw(st.integers(1, 5))
    accumulation = draw(st.integers(1, 3))
    micro = -(-rows // batch)
    windows = -(-micro // accumulation)
    if iterable:
        total = draw(st.integers(2, 10))
        epochs = None
    else:
        use_epochs = draw(st.booleans())
        epochs = draw(st.integers(1, 3)) if use_epochs else None
        total = windows * epochs if epochs else draw(st.integers(2, 12))
    k = draw(st.integers(1, max(1, total - 1)))
    return {
        "iterable": iterable,
        "stateful": iterable and draw(st.booleans()),
        "rows": rows,
        "batch": batch,
        "accumulation": accumulation,
        "epochs": epochs,
        "total": total,
        "k": k,
        "dropout": draw(st.sampled_from([0.0, 0.3])),
        "workers": draw(st.sampled_from([0, 0, 2])),
        "mid_window": (k % windows != 0) if not iterable else True,
    }


def build(config: dict[str, Any], out: Path, callbacks: list[Any] | None = None) -> Trainer:
    torch.manual_seed(1234)
    rows = regression_rows(config["rows"], seed=config["rows"])
    data = (CursorStream(rows) if config["stateful"] else RowStream(rows)) if config["iterable"] else rows
    args = TrainingArguments(
        str(out),
        per_device_train_batch_size=config["batch"],
        gradient_accumulation_steps=config["accumulation"],
        max_steps=-1 if config["epochs"] else config["total"],
        num_train_epochs=config["epochs"] or 1,
        save_strategy="steps",
        save_steps=config["k"],
        logging_steps=1,
        learning_rate=0.05,
        dataloader_num_workers=config["workers"],
        use_cpu=True,
        disable_tqdm=True,
        seed=7,
        report_to="none",
    )
    return Trainer(model=TinyRegressor(dropout=config["dropout"]), args=args, train_dataset=data, callbacks=callbacks)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configurations())
def test_stop_and_resume_equals_uninterrupted(config: dict[str, Any]) -> None:
    for name in ("iterable", "stateful", "mid_window"):
        event(f"{name}={config[name]}")
    event(f"workers={config['workers']}")
    event(f"dropout={config['dropout'] > 0}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        full = build(config, root / "full")
        full.train()

        stopped = build(config, root / "cut", callbacks=[StopAfter(config["k"])])
        stopped.train()
        checkpoint = root / "cut" / f"checkpoint-{config['k']}"
        assert checkpoint.is_dir()

        resumed = build(config, root / "cut")
        resumed.train(resume_from_checkpoint=str(checkpoint))

        assert resumed.state.global_step == full.state.global_step
        for a, b in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
            assert torch.equal(a, b)
        for a, b in zip(optimizer_tensors(full), optimizer_tensors(resumed), strict=True):
            assert torch.equal(a, b)
        assert untimed(resumed.state.log_history) == untimed(full.state.log_history)
