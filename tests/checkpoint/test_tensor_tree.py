"""tensor_tree: exact, pickle-free round trips of nested training state through JSON + safetensors."""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import pickle
import re
import struct
import tempfile
from collections import defaultdict, namedtuple
from collections.abc import Callable, Iterator
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from statetrain.checkpoint.tensor_tree import (
    TreeFormatError,
    flatten,
    load_tree,
    save_tree,
    tree_paths,
    unflatten,
)

# --------------------------------------------------------------------------- exact equality


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """Raw bytes of a tensor, so NaN payloads and -0.0 count as values (``torch.equal`` says NaN != NaN)."""
    flat = tensor.detach().cpu().reshape(-1)
    packed = torch.empty(flat.shape, dtype=flat.dtype)  # stride 1 even for one element, so .view works
    packed.copy_(flat)
    return packed.view(torch.uint8) if packed.numel() else torch.empty(0, dtype=torch.uint8)


def assert_tree_equal(actual: Any, expected: Any, path: str = "<root>") -> None:
    """Recursive equality that also demands equal types, dtypes, shapes and float bit patterns."""
    assert type(actual) is type(expected), f"{path}: {type(actual).__name__} != {type(expected).__name__}"
    if isinstance(expected, dict):
        assert len(actual) == len(expected), f"{path}: {len(actual)} keys != {len(expected)}"
        for (ka, va), (ke, ve) in zip(actual.items(), expected.items(), strict=True):
            assert_tree_equal(ka, ke, f"{path}.<key {ke!r}>")
            assert_tree_equal(va, ve, f"{path}[{ke!r}]")
        assert getattr(actual, "_metadata", None) == getattr(expected, "_metadata", None), f"{path}: _metadata"
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{path}: length {len(actual)} != {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_tree_equal(a, e, f"{path}[{i}]")
    elif isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype, f"{path}: {actual.dtype} != {expected.dtype}"
        assert actual.shape == expected.shape, f"{path}: {actual.shape} != {expected.shape}"
        assert actual.requires_grad == expected.requires_grad, f"{path}: requires_grad"
        assert torch.equal(_bits(actual), _bits(expected)), f"{path}: tensor values differ"
        if not (expected.is_floating_point() or expected.is_complex()):
            assert torch.equal(actual, expected), f"{path}: tensor values differ"
    elif isinstance(expected, (np.ndarray, np.generic)):
        assert actual.dtype == expected.dtype, f"{path}: {actual.dtype} != {expected.dtype}"
        assert np.shape(actual) == np.shape(expected), f"{path}: shape"
        assert actual.tobytes() == expected.tobytes(), f"{path}: numpy values differ"
    elif isinstance(expected, float):
        if math.isnan(expected):
            assert math.isnan(actual), f"{path}: {actual!r} is not NaN"
        else:
            assert actual == expected, f"{path}: {actual!r} != {expected!r}"
            assert math.copysign(1.0, actual) == math.copysign(1.0, expected), f"{path}: sign of zero"
        assert struct.pack("<d", actual) == struct.pack("<d", expected), f"{path}: float bits differ"
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def roundtrip(obj: Any, directory: Path, name: str = "tree") -> Any:
    written = save_tree(obj, directory, name)
    assert written == list(tree_paths(directory, name))
    assert all(path.is_file() for path in written)
    return load_tree(directory, name)


# --------------------------------------------------------------------------- random structures

DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.uint8,
    torch.bool,
]
FLOAT_WIDTH = {torch.float64: 64, torch.float32: 32, torch.float16: 16, torch.bfloat16: 32}


@st.composite
def tensors(draw: st.DrawFn) -> torch.Tensor:
    dtype = draw(st.sampled_from(DTYPES))
    shape = tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
    strided = bool(shape) and draw(st.booleans())  # a non-contiguous view: every other column of a wider base
    base_shape = (*shape[:-1], shape[-1] * 2) if strided else shape
    count = math.prod(base_shape)
    elements: st.SearchStrategy[Any]
    if dtype.is_floating_point:
        elements = st.floats(width=FLOAT_WIDTH[dtype])  # type: ignore[arg-type]
    elif dtype == torch.bool:
        elements = st.booleans()
    else:
        info = torch.iinfo(dtype)
        elements = st.integers(info.min, info.max)
    values = draw(st.lists(elements, min_size=count, max_size=count))
    tensor = torch.tensor(values, dtype=torch.float64 if dtype.is_floating_point else None)
    tensor = tensor.to(dtype).reshape(base_shape)
    return tensor[..., ::2] if strided else tensor


numpy_leaves = st.one_of(
    st.builds(np.float64, st.floats()),
    st.builds(np.int32, st.integers(-(2**31), 2**31 - 1)),
    st.builds(np.bool_, st.booleans()),
    st.lists(st.integers(0, 2**32 - 1), max_size=5).map(lambda v: np.array(v, dtype=np.uint32)),
    st.lists(st.floats(width=32), max_size=5).map(lambda v: np.array(v, dtype=np.float32)),
)

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**200), 2**200),
    st.floats(),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 0.0, 5e-324, 1e308]),
    st.text(max_size=8),
    tensors(),
    numpy_leaves,
)
# Keys that look like the skeleton's own markers must stay plain user keys.
keys = st.one_of(st.text(max_size=6), st.integers(), st.sampled_from(["t", "items", "key", "dict", "format", "root"]))
trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(keys, children, max_size=4),
    ),
    max_leaves=24,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees)
def test_random_trees_round_trip_exactly_on_disk(tree: Any) -> None:
    with tempfile.TemporaryDirectory() as directory:
        assert_tree_equal(roundtrip(tree, Path(directory)), tree)


@settings(max_examples=50, deadline=None)
@given(trees)
def test_random_trees_round_trip_in_memory_through_strict_json(tree: Any) -> None:
    skeleton, flat = flatten(tree)
    text = json.dumps(skeleton, allow_nan=False)  # the skeleton is standard JSON: no NaN/Infinity literals
    assert_tree_equal(unflatten(json.loads(text), flat), tree)


# --------------------------------------------------------------------------- specific edge cases


def test_scalars_keys_and_tensor_edge_cases(tmp_path: Path) -> None:
    nan_payload = struct.unpack("<d", bytes.fromhex("0100000000f8ff7f"))[0]
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tree = {
        "state": {
            0: {"step": torch.tensor(3.0), "exp_avg": base.t(), "slice": base[1:, ::3]},
            -1: {"int": 2**70, "neg": -(2**64), "floats": (-0.0, float("-inf"), nan_payload, 1e-310)},
        },
        (1, "a"): [None, True, False, 0, 1],
        True: "bool key",
        2.5: "float key",
        "empty": ({}, [], (), torch.zeros(0, 3), torch.tensor(True)),
        "odd": torch.tensor([1 + 2j, -0.0 - 1j]).conj(),
        "size": torch.Size([2, 3]),
        "dtype": torch.bfloat16,
        "unicode": "é\u2603\U0001f600",
    }
    loaded = roundtrip(tree, tmp_path)
    expected = {
        **tree,
        "odd": torch.complex(torch.tensor([1.0, -0.0]), torch.tensor([-2.0, 1.0])),
    }  # conj is stored resolved
    assert_tree_equal(loaded, expected)
    assert loaded["state"][0]["step"].dim() == 0
    assert loaded["state"][0]["exp_avg"].is_contiguous()
    assert struct.pack("<d", loaded["state"][-1]["floats"][2]).hex() == "0100000000f8ff7f"


def test_model_state_dict_and_parameters_round_trip(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    state = model.state_dict()
    linear = model[0]
    assert isinstance(linear, nn.Linear)
    weight = linear.weight
    loaded = roundtrip({"model": state, "param": weight}, tmp_path)
    assert_tree_equal(loaded["model"], state)
    assert type(loaded["param"]) is nn.Parameter and loaded["param"].requires_grad
    assert torch.equal(loaded["param"], weight)
    nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)).load_state_dict(loaded["model"])


def test_flatten_copies_only_what_shares_storage(tmp_path: Path) -> None:
    tensor = torch.ones(3)
    base = torch.zeros(6)
    _, flat = flatten({"a": tensor, "b": tensor, "view": base[2:4]})
    assert len(flat) == 3
    assert flat["0"].data_ptr() == tensor.data_ptr()  # a tensor alone in its storage: no copy
    assert flat["1"].data_ptr() != tensor.data_ptr()  # a second reference: copied
    assert flat["2"].untyped_storage().nbytes() == 2 * 4  # a view: copied, without its base
    save_tree({"a": tensor, "b": tensor}, tmp_path, "shared")  # safetensors accepts the result
    assert torch.equal(load_tree(tmp_path, "shared")["b"], tensor)


def test_map_location(tmp_path: Path) -> None:
    save_tree({"x": torch.arange(3)}, tmp_path, "tree")
    assert load_tree(tmp_path, "tree", map_location=torch.device("cpu"))["x"].device.type == "cpu"
    assert load_tree(tmp_path, "tree", map_location="meta")["x"].device.type == "meta"


Point = namedtuple("Point", "x y")


class Color(IntEnum):
    RED = 1


@pytest.mark.parametrize(
    ("obj", "where"),
    [
        ({"state": {3: {"exp_avg": object()}}}, "state[3].exp_avg"),
        ({"state": [1, {"fn": lambda: 0}]}, "state[1].fn"),
        ({"s": {1, 2}}, "s"),
        ({"p": Point(1, 2)}, "p"),
        ({"d": defaultdict(list)}, "d"),
        ({"e": [Color.RED]}, "e[0]"),
        ({"with space": np.array(["a"])}, "['with space']"),
        ({"o": np.array([object()])}, "o"),
        ({"sparse": torch.eye(2).to_sparse()}, "sparse"),
        ({torch.ones(1).sum(): 1}, "[tensor(1.)]"),
        ({"k": {frozenset([1]): 0}}, "k[frozenset({1})]"),
        (b"bytes", "<root>"),
    ],
)
def test_unsupported_values_raise_type_error_naming_the_path(obj: Any, where: str, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=f"at {re.escape(where)}"):
        flatten(obj)
    with pytest.raises(TypeError):
        save_tree(obj, tmp_path, "tree")
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_bad_names_are_rejected(tmp_path: Path) -> None:
    for name in ("", ".", "..", "a/b", "../x"):
        with pytest.raises(ValueError, match="plain file name"):
            save_tree({}, tmp_path, name)


# --------------------------------------------------------------------------- corrupt / hostile files


def _tamper_json(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    json_path = tmp_path / "tree.json"
    skeleton = json.loads(json_path.read_text())
    edit(skeleton)
    json_path.write_text(json.dumps(skeleton))


def _tensor_node(skeleton: dict[str, Any]) -> dict[str, Any]:
    node: dict[str, Any] = skeleton["root"]["items"][0][1]
    assert node["t"] == "tensor"
    return node


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: _tensor_node(s).update(key="99"), "missing tensor '99'"),
        (lambda s: s["root"]["items"][1].__setitem__(1, {"t": "pickle", "data": "x"}), "unknown marker 'pickle'"),
        (lambda s: s["root"]["items"][1].__setitem__(1, {"t": "list"}), "malformed 'list' node"),
        (lambda s: _tensor_node(s).update(dtype="float64"), "skeleton says float64"),
        (lambda s: _tensor_node(s).update(shape=[3, 1]), "skeleton says \\[3, 1\\]"),
        (lambda s: s["root"]["items"].pop(0), "not referenced"),
        (lambda s: s.update(version=2), "unsupported .* version 2"),
        (lambda s: s.update(format="other"), "not a statetrain.tensor_tree skeleton"),
        (lambda s: s["root"]["items"][1].__setitem__(0, {"t": "list", "items": []}), "cannot be a dict key"),
        (lambda s: s["root"]["items"][1].__setitem__(1, {"t": "float", "bits": "zz"}), "bad float bits"),
    ],
)
def test_tampered_skeletons_raise_errors_naming_the_file(
    edit: Callable[[dict[str, Any]], None], message: str, tmp_path: Path
) -> None:
    save_tree({"x": torch.ones(3), "y": 1}, tmp_path, "tree")
    _tamper_json(tmp_path, edit)
    with pytest.raises(TreeFormatError, match=message) as info:
        load_tree(tmp_path, "tree")
    assert str(tmp_path / "tree.json") in str(info.value)


def test_malformed_json_and_missing_files(tmp_path: Path) -> None:
    save_tree({"x": 1}, tmp_path, "tree")
    (tmp_path / "tree.json").write_text('{"format": ')
    with pytest.raises(TreeFormatError, match=f"{tmp_path / 'tree.json'}: not valid JSON"):
        load_tree(tmp_path, "tree")
    (tmp_path / "tree.json").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "tree.json"))):
        load_tree(tmp_path, "tree")
    save_tree({"x": 1}, tmp_path, "tree")
    (tmp_path / "tree.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "tree.safetensors"))):
        load_tree(tmp_path, "tree")


class _Pwn:
    """Unpickling this runs ``touch <marker>``: the classic pickle code-execution payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def payloads(tmp_path: Path) -> Iterator[tuple[Path, dict[str, bytes]]]:
    marker = tmp_path / "pwned"
    probe = tmp_path / "probe"
    # The payload is live: plain pickle does execute it (on a different marker).
    pickle.loads(pickle.dumps(_Pwn(probe)))
    assert probe.exists()
    torch_file = tmp_path / "torch_save.bin"
    torch.save({"x": _Pwn(marker)}, torch_file)
    blobs = {
        "pickle": pickle.dumps(_Pwn(marker)),
        "pickle_ascii": pickle.dumps(_Pwn(marker), protocol=0),  # protocol 0 is printable text
        "torch.save": torch_file.read_bytes(),
    }
    yield marker, blobs
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["pickle", "pickle_ascii", "torch.save"])
@pytest.mark.parametrize("target", ["json", "safetensors"])
def test_pickle_payloads_are_never_executed(
    payloads: tuple[Path, dict[str, bytes]], kind: str, target: str, tmp_path: Path
) -> None:
    marker, blobs = payloads
    directory = tmp_path / "ckpt"
    save_tree({"x": torch.ones(2), "y": [1, 2]}, directory, "tree")
    (directory / f"tree.{target}").write_bytes(blobs[kind])
    with pytest.raises(TreeFormatError) as info:
        load_tree(directory, "tree")
    assert str(directory / f"tree.{target}") in str(info.value)
    assert not marker.exists()


# --------------------------------------------------------------------------- real optimizer / scheduler state


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 + step)
    return torch.randn(8, 4, generator=generator), torch.randn(8, 3, generator=generator)


def _loss(model: nn.Module, step: int) -> torch.Tensor:
    x, y = _batch(step)
    return nn.functional.mse_loss(model(x), y)


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: range, scheduler: Any = None) -> None:
    for step in steps:
        optimizer.zero_grad()
        loss = _loss(model, step)
        loss.backward()
        optimizer.step()
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(1.0 if step % 3 else 0.5)  # plateaus, so the LR is actually reduced
        elif scheduler is not None:
            scheduler.step()


def _assert_same_params(a: nn.Module, b: nn.Module) -> None:
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), name


OPTIMIZERS: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "adamw_fused": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1, fused=True),
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, nesterov=True),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=1e-2),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-2, momentum=0.5, centered=True),
    "adafactor": lambda p: torch.optim.Adafactor(p, lr=1e-2),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_state_resumes_identically(name: str, tmp_path: Path) -> None:
    make = OPTIMIZERS[name]
    model = _model()
    optimizer = make(model.parameters())
    _train(model, optimizer, range(3))
    save_tree(optimizer.state_dict(), tmp_path, "optimizer")

    resumed = copy.deepcopy(model)
    resumed_optimizer = make(resumed.parameters())
    loaded = load_tree(tmp_path, "optimizer")
    assert_tree_equal(loaded, optimizer.state_dict())
    resumed_optimizer.load_state_dict(loaded)
    assert_tree_equal(resumed_optimizer.state_dict(), optimizer.state_dict())

    _train(model, optimizer, range(3, 6))
    _train(resumed, resumed_optimizer, range(3, 6))
    _assert_same_params(model, resumed)


def _warmup(step: int, warmup: int) -> float:
    return min(1.0, (step + 1) / warmup)


SCHEDULERS: dict[str, Callable[[torch.optim.Optimizer], Any]] = {
    "lambda_partial": lambda o: torch.optim.lr_scheduler.LambdaLR(o, functools.partial(_warmup, warmup=5)),
    "plateau": lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, factor=0.5, patience=1),
}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_scheduler_state_resumes_identically(name: str, tmp_path: Path) -> None:
    make = SCHEDULERS[name]
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = make(optimizer)
    _train(model, optimizer, range(4), scheduler)
    save_tree({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp_path, "state")

    resumed = copy.deepcopy(model)
    resumed_optimizer = torch.optim.SGD(resumed.parameters(), lr=0.1, momentum=0.9)
    resumed_scheduler = make(resumed_optimizer)
    loaded = load_tree(tmp_path, "state")
    assert_tree_equal(loaded["scheduler"], scheduler.state_dict())
    resumed_optimizer.load_state_dict(loaded["optimizer"])
    resumed_scheduler.load_state_dict(loaded["scheduler"])

    _train(model, optimizer, range(4, 7), scheduler)
    _train(resumed, resumed_optimizer, range(4, 7), resumed_scheduler)
    _assert_same_params(model, resumed)
    assert resumed_scheduler.get_last_lr() == scheduler.get_last_lr()
    if name == "plateau":
        assert scheduler.get_last_lr()[0] < 0.1  # the test exercised a reduction


def test_grad_scaler_state_resumes_identically(tmp_path: Path) -> None:
    def train(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, steps: range) -> None:
        for step in steps:
            optimizer.zero_grad()
            loss = _loss(model, step) * (float("inf") if step == 1 else 1.0)  # one overflow → backoff
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

    model = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3)
    train(model, optimizer, scaler, range(4))
    assert scaler.get_scale() == 2.0**9 and scaler.state_dict()["_growth_tracker"] == 2  # grows on the next step
    save_tree({"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()}, tmp_path, "state")

    resumed = copy.deepcopy(model)
    resumed_optimizer = torch.optim.AdamW(resumed.parameters(), lr=1e-2)
    resumed_scaler = torch.amp.GradScaler("cpu")
    loaded = load_tree(tmp_path, "state")
    assert_tree_equal(loaded["scaler"], scaler.state_dict())
    resumed_optimizer.load_state_dict(loaded["optimizer"])
    resumed_scaler.load_state_dict(loaded["scaler"])

    train(model, optimizer, scaler, range(4, 7))
    train(resumed, resumed_optimizer, resumed_scaler, range(4, 7))
    _assert_same_params(model, resumed)
    assert_tree_equal(resumed_scaler.state_dict(), scaler.state_dict())
    assert scaler.get_scale() == 2.0**10
