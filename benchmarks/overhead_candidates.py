"""The loops benchmarks/overhead.py times, one function per candidate, each run in its own process.

Every candidate trains the same MLP (same initial weights) on the same samples in the same order
(a ``RandomSampler`` seeded with ``SEED``; the trainers' seedable sampler draws the same order),
with AdamW and a linear ``LambdaLR`` built by the same helpers, one thread, no clipping, AMP or
accumulation. Each returns the timed region's clock and a digest of the final parameters.

What is timed:

* ``hand``, ``accelerate``: building the loader, optimizer and schedule (and ``prepare``), then the loop.
* ``statetrain``, ``statetrain+log``, ``transformers``: ``trainer.train()``; the optimizer and
  schedule are passed in, the ``Trainer`` is built outside the clock.
* ``ignite``: ``engine.run(loader)`` of ``create_supervised_trainer`` (built outside the clock).
* ``lightning``: ``trainer.fit(module, loader)`` (the ``lightning.Trainer`` built outside the clock).

``statetrain+log`` keeps the default callbacks and logs every 50 steps (progress bar off); every
other candidate logs nothing.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

SEED = 42  # TrainingArguments.seed default: the seedable sampler of both trainers starts from it
INIT_SEED = 0
LR = 1e-3
LOG_EVERY = 50


@dataclass(frozen=True)
class Workload:
    name: str
    dims: tuple[int, ...]  # input, hidden..., classes
    batch: int
    steps: int

    def describe(self) -> str:
        return f"MLP {'->'.join(map(str, self.dims))}, batch {self.batch}, {self.steps} steps"


WORKLOADS = {
    "tiny": Workload("tiny", (32, 64, 10), 32, 500),
    "compute": Workload("compute", (512, 2048, 2048, 10), 128, 40),
}


class Clock:
    """Wall time and this process's CPU time over the timed region."""

    def __enter__(self) -> Clock:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


# --- shared pieces -------------------------------------------------------------------------------
def data(w: Workload) -> list[dict[str, Any]]:
    """One epoch of ``w.steps`` batches, as the list of feature dicts every candidate takes."""
    import torch

    g = torch.Generator().manual_seed(1234)
    n = w.steps * w.batch
    x = torch.randn(n, w.dims[0], generator=g)
    y = torch.randint(0, w.dims[-1], (n,), generator=g)
    return [{"x": x[i], "labels": y[i]} for i in range(n)]


def mlp(w: Workload) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(INIT_SEED)
    layers: list[nn.Module] = []
    for a, b in zip(w.dims[:-2], w.dims[1:-1], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(w.dims[-2], w.dims[-1]))
    return nn.Sequential(*layers)


def dict_model(w: Workload) -> Any:
    """The same MLP (the same modules, the same initial weights) with the HF-style
    ``forward(x, labels) -> {"logits", "loss"}`` a Trainer needs.

    Flat, not a wrapper around the ``nn.Sequential``: the loop calls as many modules as the
    hand-written loop does (one outer, then each layer), so the model's own call overhead is the
    same for every candidate and only the loop's shows.
    """
    from torch import nn

    class DictMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList(mlp(w))

        def forward(self, x: Any, labels: Any = None) -> dict[str, Any]:
            for layer in self.layers:
                x = layer(x)
            out = {"logits": x}
            if labels is not None:
                out["loss"] = nn.functional.cross_entropy(x, labels)
            return out

    return DictMLP()


def optimizer_and_schedule(params: Any, steps: int) -> tuple[Any, Any]:
    import torch

    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)

    def linear(step: int) -> float:  # HF "linear" with no warmup
        return max(0.0, float(steps - step) / float(max(1, steps)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, linear)


def loader(samples: list[dict[str, Any]], w: Workload) -> Any:
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    sampler = RandomSampler(samples, generator=torch.Generator().manual_seed(SEED))
    return DataLoader(samples, batch_size=w.batch, sampler=sampler)  # type: ignore[arg-type]


def digest(params: Any) -> str:
    h = hashlib.sha256()
    for p in params:
        h.update(p.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# --- the candidates --------------------------------------------------------------------------------
def hand(samples: list[dict[str, Any]], w: Workload, tmp: str) -> tuple[Clock, str]:
    net = dict_model(w)
    with Clock() as clock:
        batches = loader(samples, w)
        optimizer, scheduler = optimizer_and_schedule(net.parameters(), w.steps)
        net.train()
        for batch in batches:
            loss = net(**batch)["loss"]
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
    return clock, digest(net.parameters())


def accelerate_loop(samples: list[dict[str, Any]], w: Workload, tmp: str) -> tuple[Clock, str]:
    from accelerate import Accelerator

    net = dict_model(w)
    accelerator = Accelerator(cpu=True)
    with Clock() as clock:
        optimizer, scheduler = optimizer_and_schedule(net.parameters(), w.steps)
        model, optimizer, batches, scheduler = accelerator.prepare(net, optimizer, loader(samples, w), scheduler)
        model.train()
        for batch in batches:
            loss = model(**batch)["loss"]
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
    return clock, digest(net.parameters())


def _trainer_args(module: Any, w: Workload, tmp: str, log: bool) -> Any:
    return module.TrainingArguments(
        output_dir=tmp,
        per_device_train_batch_size=w.batch,
        max_steps=w.steps,
        max_grad_norm=0.0,
        logging_nan_inf_filter=False,
        logging_steps=LOG_EVERY if log else 10**6,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        dataloader_pin_memory=False,
        remove_unused_columns=False,
    )


def statetrain(samples: list[dict[str, Any]], w: Workload, tmp: str, log: bool = False) -> tuple[Clock, str]:
    import statetrain as module

    model = dict_model(w)
    optimizers = optimizer_and_schedule(model.parameters(), w.steps)
    trainer = module.Trainer(
        model=model, args=_trainer_args(module, w, tmp, log), train_dataset=samples, optimizers=optimizers
    )
    with Clock() as clock:
        trainer.train()
    assert trainer.state.global_step == w.steps
    return clock, digest(model.parameters())


def statetrain_logging(samples: list[dict[str, Any]], w: Workload, tmp: str) -> tuple[Clock, str]:
    return statetrain(samples, w, tmp, log=True)


def transformers(samples: list[dict[str, Any]], w: Workload, tmp: str) -> tuple[Clock, str]:
    import transformers as module

    module.logging.set_verbosity_error()
    model = dict_model(w)
    optimizers = optimizer_and_schedule(model.parameters(), w.steps)
    trainer = module.Trainer(
        model=model, args=_trainer_args(module, w, tmp, False), train_dataset=samples, optimizers=optimizers
    )
    with Clock() as clock:
        trainer.train()
    assert trainer.state.global_step == w.steps
    return clock, digest(model.parameters())


def ignite(samples: list[dict[str, Any]], w: Workload, tmp: str) -> tuple[Clock, str]:
    from ignite.engine import Events, create_supervised_trainer

    net = dict_model(w)
    optimizer, scheduler = optimizer_and_schedule(net.parameters(), w.steps)
    # Ignite's supervised step for a model that computes its own loss: the batch goes in whole
    engine = create_supervised_trainer(
        net,
        optimizer,
        loss_fn=lambda loss, _: loss,
        prepare_batch=lambda batch, device, non_blocking: (batch, None),
        model_fn=lambda model, batch: model(**batch)["loss"],
    )
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda _: scheduler.step())
    with Clock() as clock:
        engine.run(loader(samples, w), max_epochs=1)
    return clock, digest(net.parameters())


def lightning(samples: list[dict[str, Any]], w: Workload, tmp: str) -> tuple[Clock, str]:
    import lightning as L

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = dict_model(w)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            return self.net(**batch)["loss"]

        def configure_optimizers(self) -> Any:
            optimizer, scheduler = optimizer_and_schedule(self.net.parameters(), w.steps)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    module = Module()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=w.steps,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp,
    )
    with Clock() as clock:
        trainer.fit(module, loader(samples, w))
    return clock, digest(module.net.parameters())


CANDIDATES = {
    "hand": (hand, None),
    "statetrain": (statetrain, "statetrain"),
    "statetrain+log": (statetrain_logging, "statetrain"),
    "ignite": (ignite, "ignite"),
    "accelerate": (accelerate_loop, "accelerate"),
    "lightning": (lightning, "lightning"),
    "transformers": (transformers, "transformers"),
}
"""name -> (loop, the module whose import and first construction the child times)."""


def startup(name: str, tmp: str) -> dict[str, float]:
    """Seconds to import a trainer package and to build its first ``Trainer`` (torch already imported)."""
    w = WORKLOADS["tiny"]
    model, samples = dict_model(w), data(w)[:64]
    started = time.perf_counter()
    if name == "transformers":
        import transformers as module

        module.logging.set_verbosity_error()
    else:
        import statetrain as module  # type: ignore[no-redef]
    imported = time.perf_counter()
    module.Trainer(model=model, args=_trainer_args(module, w, tmp, False), train_dataset=samples)
    built = time.perf_counter()
    return {"import_seconds": imported - started, "construct_seconds": built - imported}
