"""Issue 3's training surface against the real ``transformers.Trainer``, option by option.

Every scheduler run through both Trainers (warmup as a ratio, ``lr_scheduler_kwargs``) applies the
same learning rate at every optimizer step; ``num_items_in_batch`` reaches models and
``compute_loss_func`` with HF's value (causal shift included); ``logging_nan_inf_filter`` logs what
HF logs; the optimizer the Trainer builds carries HF's hyperparameters; ``data_seed`` orders data
as HF; unused ``datasets.Dataset`` columns are removed as HF removes them.
"""

from __future__ import annotations

import copy
import math
import types
import warnings
from typing import Any

import pytest
import torch
from torch import nn

from statetrain import Trainer, TrainingArguments
from statetrain.optim.schedulers import SCHEDULERS
from tests.helpers import TinyRegressor, TokenModel, regression_rows, token_rows

transformers = pytest.importorskip("transformers")

BASE: dict[str, Any] = dict(
    per_device_train_batch_size=4,
    learning_rate=0.1,
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    use_cpu=True,
    seed=17,
    disable_tqdm=True,
    optim="adamw_torch",
)


class LrRecorder(transformers.TrainerCallback):
    """The learning rate each optimizer step used (read right after ``optimizer.step()``)."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_optimizer_step(self, args: Any, state: Any, control: Any, optimizer: Any = None, **kwargs: Any) -> None:
        self.lrs.append(float(optimizer.param_groups[0]["lr"]))


def train_both(
    model: nn.Module, rows: Any, tmp_path: Any, ours: dict[str, Any] | None = None, **options: Any
) -> tuple[Any, Any]:
    """The same model, data and arguments through HF and through statetrain (``ours`` only for statetrain)."""
    options = {**BASE, **options}
    eval_rows = options.pop("eval_rows", None)
    hf = transformers.Trainer(
        model=copy.deepcopy(model),
        args=transformers.TrainingArguments(output_dir=str(tmp_path / "hf"), **options),
        train_dataset=rows,
        eval_dataset=eval_rows,
        callbacks=[LrRecorder()],
    )
    hf.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # warmup_ratio is a deprecated spelling
        st_args = TrainingArguments(output_dir=str(tmp_path / "st"), **{**options, **(ours or {})})
    st = Trainer(
        model=copy.deepcopy(model),
        args=st_args,
        train_dataset=rows,
        eval_dataset=eval_rows,
        callbacks=[LrRecorder()],
    )
    st.train()
    return hf, st


def recorded_lrs(trainer: Any) -> list[float]:
    (recorder,) = [c for c in trainer.callback_handler.callbacks if isinstance(c, LrRecorder)]
    return recorder.lrs


def logged(trainer: Any, key: str) -> list[float]:
    return [e[key] for e in trainer.state.log_history if "loss" in e and key in e]


# --- every scheduler, through the Trainer -------------------------------------------------------------

SCHEDULER_KWARGS: dict[str, dict[str, Any]] = {
    "linear": {},
    "cosine": {"num_cycles": 0.75},
    "cosine_with_restarts": {"num_cycles": 2},
    "polynomial": {"power": 2.0, "lr_end": 1e-3},
    "constant": {},
    "constant_with_warmup": {},
    "inverse_sqrt": {"timescale": 3},
    # patience 0: every evaluation that does not improve on the best halves the lr
    "reduce_lr_on_plateau": {"patience": 0, "factor": 0.5},
    "cosine_with_min_lr": {"min_lr_rate": 0.1},
    "cosine_warmup_with_min_lr": {"min_lr": 1e-3},
    "warmup_stable_decay": {"num_decay_steps": 4, "decay_type": "linear"},
    # transformers' own GreedyLR: patience 0 moves the lr at every evaluation
    "greedy": {"patience": 0, "factor": 0.5},
}


def test_every_registered_scheduler_is_compared() -> None:
    assert set(SCHEDULER_KWARGS) == set(SCHEDULERS)


@pytest.mark.parametrize("name", sorted(SCHEDULER_KWARGS))
def test_every_scheduler_applies_hfs_learning_rate_at_every_step(tmp_path: Any, name: str) -> None:
    """10 steps, warmup as a ratio (0.25 → 3 steps), the schedule's own kwargs: same lr at every step."""
    torch.manual_seed(0)
    options: dict[str, Any] = dict(
        max_steps=10, warmup_steps=0.25, lr_scheduler_type=name, lr_scheduler_kwargs=SCHEDULER_KWARGS[name]
    )
    if name in ("reduce_lr_on_plateau", "greedy"):
        options.update(eval_strategy="steps", eval_steps=2, eval_rows=regression_rows(8, seed=9))
    hf, st = train_both(TinyRegressor(), regression_rows(40, seed=1), tmp_path, **options)
    ours, theirs = recorded_lrs(st), recorded_lrs(hf)
    assert len(ours) == len(theirs) == 10
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True), start=1):
        assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15), f"{name} step {step}: {a} != {b}"
    assert logged(st, "learning_rate") == pytest.approx(logged(hf, "learning_rate"), rel=1e-12, abs=1e-15)
    if name != "constant":
        assert len(set(ours)) > 1, "the schedule must actually move the lr in this run"
    for (pname, p), q in zip(st.model.named_parameters(), hf.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6, rtol=0), pname


def test_deprecated_warmup_ratio_warms_up_like_hfs_fractional_warmup_steps(tmp_path: Any) -> None:
    """transformers 5 dropped ``warmup_ratio`` for ``warmup_steps < 1``; statetrain still takes the old name."""
    torch.manual_seed(0)
    hf, st = train_both(
        TinyRegressor(),
        regression_rows(40, seed=1),
        tmp_path,
        ours={"warmup_steps": 0, "warmup_ratio": 0.3},
        max_steps=10,
        warmup_steps=0.3,
        lr_scheduler_type="linear",
    )
    assert st.args.warmup_steps == 0.3
    assert recorded_lrs(st) == pytest.approx(recorded_lrs(hf), rel=1e-12)
    assert recorded_lrs(st)[:4] == pytest.approx([0.0, 0.1 / 3, 0.2 / 3, 0.1], rel=1e-12)


# --- num_items_in_batch: what reaches the model and compute_loss_func ------------------------------------


class ItemRecorder(TokenModel):
    """``TokenModel`` (takes ``**kwargs``) that records the ``num_items_in_batch`` it is given."""

    def __init__(self, loss_type: str | None = None, encoder_decoder: bool = False) -> None:
        super().__init__()
        if loss_type is not None:
            self.loss_type = loss_type
        self.config = types.SimpleNamespace(is_encoder_decoder=encoder_decoder, problem_type=None)
        self.given: list[float | None] = []

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, **kwargs: Any) -> dict[str, Any]:
        n = kwargs.get("num_items_in_batch")
        self.given.append(None if n is None else float(n))
        return super().forward(input_ids, labels, **kwargs)


class RefusingRecorder(ItemRecorder):
    """Has ``**kwargs`` but says it takes no loss kwargs: the attribute wins over the signature (HF)."""

    accepts_loss_kwargs = False


GA_OPTIONS: dict[str, Any] = dict(
    per_device_train_batch_size=2, gradient_accumulation_steps=3, num_train_epochs=1, max_grad_norm=0.5
)


@pytest.mark.parametrize(
    ("model_factory", "shifted"),
    [
        (lambda: ItemRecorder(), False),
        (lambda: ItemRecorder("ForCausalLM"), True),
        # decoder-only multimodal models: HF maps this loss type to ForCausalLMLoss and shifts too
        (lambda: ItemRecorder("ForConditionalGeneration"), True),
        # ...but not for encoder-decoder models, whose labels are not shifted
        (lambda: ItemRecorder("ForConditionalGeneration", encoder_decoder=True), False),
        (lambda: ItemRecorder("ForMaskedLM"), False),
        (lambda: RefusingRecorder(), None),
    ],
    ids=["kwargs", "causal", "conditional_generation", "encoder_decoder", "masked_lm", "accepts_loss_kwargs_false"],
)
def test_num_items_in_batch_reaching_the_model_is_hfs(tmp_path: Any, model_factory: Any, shifted: bool | None) -> None:
    torch.manual_seed(0)
    rows = token_rows(14, seed=4)  # 7 micro-batches of 2, GA 3: windows of 3, 3, 1 micro-batches
    hf, st = train_both(model_factory(), rows, tmp_path, **GA_OPTIONS)
    assert st.model_accepts_loss_kwargs == hf.model_accepts_loss_kwargs == (shifted is not None)
    assert st.model.given == hf.model.given and len(st.model.given) == 7
    if shifted is None:
        # nothing reaches the model; statetrain then weights the mean losses by items where HF
        # divides by the window length (docs/differences.md 15), so the parameters differ by design
        assert st.model.given == [None] * 7
        return
    # one count per window, given to each of its micro-batches
    assert len(set(st.model.given[:3])) == len(set(st.model.given[3:6])) == 1
    assert st.model.given[0] is not None and st.model.given[0] > 0
    for p, q in zip(st.model.parameters(), hf.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5, rtol=0)
    assert logged(st, "loss") == pytest.approx(logged(hf, "loss"), abs=1e-5)


def test_shifted_counting_differs_from_unshifted_for_these_rows(tmp_path: Any) -> None:
    """Guard for the test above: the causal shift must change the counts, or it proves nothing."""
    torch.manual_seed(0)
    rows = token_rows(14, seed=4)
    _, plain = train_both(ItemRecorder(), rows, tmp_path / "plain", **GA_OPTIONS)
    _, causal = train_both(ItemRecorder("ForCausalLM"), rows, tmp_path / "causal", **GA_OPTIONS)
    assert plain.model.given != causal.model.given


class PlainLogits(nn.Module):
    """Logits only, no ``**kwargs``: the loss comes from ``compute_loss_func``."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = TokenModel()

    def forward(self, input_ids: torch.Tensor) -> dict[str, Any]:
        return {"logits": self.inner(input_ids)["logits"]}


def make_loss_func(seen: list[float | None], dtypes: list[Any] | None = None) -> Any:
    def loss_func(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        seen.append(None if num_items_in_batch is None else float(num_items_in_batch))
        if dtypes is not None:
            dtypes.append(getattr(num_items_in_batch, "dtype", type(num_items_in_batch)))
        logits = outputs["logits"]
        total = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
        )
        return total / num_items_in_batch

    return loss_func


def test_compute_loss_func_gets_the_windows_item_count_as_in_hf(tmp_path: Any) -> None:
    torch.manual_seed(0)
    rows = token_rows(14, seed=6)
    hf_seen: list[float | None] = []
    st_seen: list[float | None] = []
    hf_dtypes: list[Any] = []
    st_dtypes: list[Any] = []
    model = PlainLogits()
    options = {**BASE, **GA_OPTIONS, "remove_unused_columns": False}
    hf = transformers.Trainer(
        model=copy.deepcopy(model),
        args=transformers.TrainingArguments(output_dir=str(tmp_path / "hf"), **options),
        train_dataset=rows,
        compute_loss_func=make_loss_func(hf_seen, hf_dtypes),
    )
    hf.train()
    st = Trainer(
        model=copy.deepcopy(model),
        args=TrainingArguments(output_dir=str(tmp_path / "st"), **options),
        train_dataset=rows,
        compute_loss_func=make_loss_func(st_seen, st_dtypes),
    )
    st.train()
    assert st_seen == hf_seen and len(st_seen) == 7
    assert st_dtypes == hf_dtypes  # the count arrives as HF's float tensor, not an integer one
    # one count per window, over all of the window's micro-batches
    label_counts = [int((r["labels"] != -100).sum()) for r in rows]
    assert sum({n for n in st_seen if n is not None}) <= sum(label_counts)
    assert st_seen[0] == st_seen[1] == st_seen[2] and st_seen[3] == st_seen[4] == st_seen[5]
    for p, q in zip(st.model.parameters(), hf.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5, rtol=0)
    assert logged(st, "loss") == pytest.approx(logged(hf, "loss"), abs=1e-5)


# --- logging_nan_inf_filter -------------------------------------------------------------------------


def poisoned_rows() -> list[dict[str, Any]]:
    rows = regression_rows(24, seed=1)  # 6 micro-batches of 4, windows of 2
    rows[13]["x"] = torch.full_like(rows[13]["x"], float("inf"))  # 2nd micro-batch of the 2nd window
    return rows


def same_floats(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(
        (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, abs=1e-6) for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("nan_filter", [True, False])
def test_logging_nan_inf_filter_logs_what_hf_logs(tmp_path: Any, nan_filter: bool) -> None:
    torch.manual_seed(0)
    hf, st = train_both(
        TinyRegressor(),
        poisoned_rows(),
        tmp_path,
        gradient_accumulation_steps=2,
        num_train_epochs=1,
        train_sampling_strategy="sequential",
        logging_steps=1,
        max_grad_norm=0.0,
        logging_nan_inf_filter=nan_filter,
    )
    ours, theirs = logged(st, "loss"), logged(hf, "loss")
    assert same_floats(ours, theirs), (ours, theirs)
    assert all(math.isfinite(v) for v in ours) is nan_filter


# --- the optimizer the Trainer builds ---------------------------------------------------------------

HYPERPARAMETERS = ("lr", "betas", "eps", "weight_decay", "momentum", "nesterov", "alpha", "centered", "lr_decay")


@pytest.mark.parametrize(
    ("optim", "optim_args"),
    [
        ("adamw_torch", None),
        ("adamw_torch_fused", None),
        ("sgd", "momentum=0.9,nesterov=True"),
        ("adagrad", "lr_decay=0.01"),
        ("rmsprop", "momentum=0.5,centered=true,alpha=0.9"),
    ],
)
def test_created_optimizer_carries_hfs_hyperparameters_and_groups(
    tmp_path: Any, optim: str, optim_args: str | None
) -> None:
    options: dict[str, Any] = dict(
        optim=optim,
        optim_args=optim_args,
        learning_rate=0.03,
        adam_beta1=0.7,
        adam_beta2=0.97,
        adam_epsilon=1e-6,
        weight_decay=0.05,
        use_cpu=True,
        report_to="none",
    )
    model = TokenModel()
    hf = transformers.Trainer(
        model=copy.deepcopy(model), args=transformers.TrainingArguments(str(tmp_path / "hf"), **options)
    ).create_optimizer()
    st = Trainer(model=copy.deepcopy(model), args=TrainingArguments(str(tmp_path / "st"), **options)).create_optimizer()
    assert type(st) is type(hf)
    assert len(st.param_groups) == len(hf.param_groups) == 2
    for ours, theirs in zip(st.param_groups, hf.param_groups, strict=True):
        assert [p.shape for p in ours["params"]] == [p.shape for p in theirs["params"]]
        for key in HYPERPARAMETERS:
            assert ours.get(key) == theirs.get(key), key
    assert st.param_groups[0]["weight_decay"] == 0.05 and st.param_groups[1]["weight_decay"] == 0.0
    if optim.startswith("adamw"):
        assert st.param_groups[0]["betas"] == (0.7, 0.97) and st.param_groups[0]["eps"] == 1e-6


# --- data_seed ------------------------------------------------------------------------------------


class OrderRecorder(TinyRegressor):
    """Records the first input feature of every row it trains on: the data order."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[float] = []

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
        if self.training:
            self.order.extend(x[:, 0].tolist())
        return super().forward(x, labels)


def data_order(tmp_path: Any, seed: int, data_seed: int | None) -> list[float]:
    torch.manual_seed(0)
    options = {**BASE, "seed": seed, "data_seed": data_seed, "max_steps": 6, "num_train_epochs": 2}
    trainer = Trainer(
        model=OrderRecorder(),
        args=TrainingArguments(str(tmp_path / f"{seed}-{data_seed}"), **options),
        train_dataset=regression_rows(12, seed=3),
    )
    trainer.train()
    return trainer.model.order


def test_data_seed_orders_the_data_independently_of_seed_as_in_hf(tmp_path: Any) -> None:
    fixed = data_order(tmp_path, seed=1, data_seed=7)
    assert data_order(tmp_path, seed=2, data_seed=7) == fixed  # the model seed does not move the data
    assert data_order(tmp_path, seed=1, data_seed=8) != fixed  # the data seed does
    assert data_order(tmp_path, seed=1, data_seed=None) != data_order(tmp_path, seed=2, data_seed=None)
    torch.manual_seed(0)
    hf = transformers.Trainer(
        model=OrderRecorder(),
        args=transformers.TrainingArguments(
            str(tmp_path / "hf"), **{**BASE, "seed": 1, "data_seed": 7, "max_steps": 6, "num_train_epochs": 2}
        ),
        train_dataset=regression_rows(12, seed=3),
    )
    hf.train()
    assert hf.model.order == fixed


# --- remove_unused_columns with a datasets.Dataset --------------------------------------------------


def test_unused_datasets_columns_are_removed_as_in_hf(tmp_path: Any) -> None:
    datasets = pytest.importorskip("datasets")
    rows = regression_rows(16, seed=2)
    table = datasets.Dataset.from_dict(
        {
            "x": [r["x"].tolist() for r in rows],
            "labels": [int(r["labels"]) for r in rows],
            "comment": [f"row {i}" for i in range(16)],
            "score": [float(i) for i in range(16)],
        }
    )
    torch.manual_seed(0)
    hf, st = train_both(TinyRegressor(), table, tmp_path, max_steps=4)
    assert st.get_train_dataloader().dataset.column_names == ["x", "labels"]
    assert hf.get_train_dataloader().dataset.column_names == ["x", "labels"]
    for p, q in zip(st.model.parameters(), hf.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6, rtol=0)
    # nothing the model takes: named, not a crash inside the model
    unusable = datasets.Dataset.from_dict({"pixels": [[0.0] * 8] * 4, "target": [1] * 4})
    trainer = Trainer(
        model=TinyRegressor(),
        args=TrainingArguments(str(tmp_path / "bad"), **{**BASE, "max_steps": 1}),
        train_dataset=unusable,
    )
    with pytest.raises(ValueError, match=r"rows lack the model.s input column\(s\) \[.x.\]: TinyRegressor\.forward"):
        trainer.train()
    # with remove_unused_columns=False the extra columns reach the model, which refuses them
    keep = Trainer(
        model=TinyRegressor(),
        args=TrainingArguments(str(tmp_path / "keep"), **{**BASE, "max_steps": 1, "remove_unused_columns": False}),
        train_dataset=table.remove_columns(["comment"]),
    )
    with pytest.raises(TypeError, match="score"):
        keep.train()
