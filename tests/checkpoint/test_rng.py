"""rng: capturing and restoring every global generator makes a resumed run draw the same numbers."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from statetrain.checkpoint import rng
from statetrain.checkpoint.rng import (
    capture_rng_state,
    load_rng_state,
    restore_rng_state,
    rng_state_name,
    save_rng_state,
)
from statetrain.checkpoint.tensor_tree import TreeFormatError
from tests.checkpoint.test_tensor_tree import assert_tree_equal


def _draw() -> list[Any]:
    """Numbers from every generator, including the cached second Gaussians of Python and numpy."""
    return [
        random.random(),
        random.getrandbits(100),
        random.gauss(0.0, 1.0),
        np.random.rand(4).tolist(),
        float(np.random.randn()),
        np.random.randint(0, 2**31, size=3).tolist(),
        torch.rand(5),
        torch.randint(0, 1000, (4,)),
        torch.nn.functional.dropout(torch.ones(16), p=0.5),
    ]


def _assert_same_draws(a: list[Any], b: list[Any]) -> None:
    for x, y in zip(a, b, strict=True):
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y)
        else:
            assert x == y


def _scramble() -> None:
    random.seed(12345)
    np.random.seed(12345)
    torch.manual_seed(12345)


@pytest.fixture(autouse=True)
def _keep_global_rng() -> Any:
    """These tests reseed the global generators; put them back so other tests are unaffected."""
    saved = capture_rng_state()
    yield
    restore_rng_state(saved)


@pytest.fixture
def mid_sequence_state() -> None:
    """Leave Python's ``gauss_next`` and numpy's cached Gaussian set: the easy-to-lose parts of the state."""
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    random.gauss(0.0, 1.0)
    np.random.randn()
    torch.rand(3)


def test_capture_has_all_generators(mid_sequence_state: None) -> None:
    state = capture_rng_state()
    assert set(state) == {"python", "numpy", "cpu"} | ({"cuda"} if torch.cuda.is_available() else set())
    version, internal, gauss_next = state["python"]
    assert version == 3 and len(internal) == 625 and isinstance(gauss_next, float)
    assert state["numpy"][0] == "MT19937" and state["numpy"][1].dtype == np.uint32 and state["numpy"][3] == 1
    assert state["cpu"].dtype == torch.uint8


def test_restore_in_memory_repeats_draws(mid_sequence_state: None) -> None:
    state = capture_rng_state()
    first = _draw()
    _scramble()
    restore_rng_state(state)
    _assert_same_draws(_draw(), first)


@pytest.mark.parametrize("rank", [None, 0, 3])
def test_restore_from_files_repeats_draws(mid_sequence_state: None, rank: int | None, tmp_path: Path) -> None:
    expected_state = capture_rng_state()
    written = save_rng_state(tmp_path, rank)
    name = "rng_state" if rank is None else f"rng_state_{rank}"
    assert [p.name for p in written] == [f"{name}.json", f"{name}.safetensors"]
    first = _draw()
    _scramble()

    loaded = load_rng_state(tmp_path, rank)
    assert_tree_equal(loaded, expected_state)  # exact: tuple types, uint32 array, gauss_next float
    restore_rng_state(loaded)
    _assert_same_draws(_draw(), first)


def test_rng_files_hold_no_pickle(tmp_path: Path) -> None:
    json_path, tensor_path = save_rng_state(tmp_path)
    json.loads(json_path.read_text())  # plain JSON
    assert tensor_path.read_bytes()[8:9] == b"{"  # safetensors: 8-byte header length, then a JSON header


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"rng_state_5\.json"):
        load_rng_state(tmp_path, 5)
    save_rng_state(tmp_path, 5)
    (tmp_path / "rng_state_5.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"rng_state_5\.safetensors"):
        load_rng_state(tmp_path, 5)


def test_other_trees_are_not_rng_state(tmp_path: Path) -> None:
    from statetrain.checkpoint.tensor_tree import save_tree

    save_tree({"optimizer": 1}, tmp_path, "rng_state")
    with pytest.raises(TreeFormatError, match="not an RNG state"):
        load_rng_state(tmp_path)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="rank"):
        rng_state_name(-1)
    with pytest.raises(ValueError, match="unknown RNG state keys"):
        restore_rng_state({"tpu": 1})
    with pytest.raises(TypeError, match="uint8 tensor"):
        restore_rng_state({"cpu": torch.zeros(3)})


def test_partial_state_restores_only_what_is_present() -> None:
    random.seed(1)
    state = {"python": random.getstate()}
    expected = random.random()
    torch.manual_seed(99)
    torch_before = torch.get_rng_state()
    restore_rng_state(state)
    assert random.random() == expected
    assert torch.equal(torch.get_rng_state(), torch_before)


def test_cuda_states_are_captured_and_restored_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated CUDA (the real path runs on GPU machines): all devices captured, each restored to its index."""
    states = [torch.full((16,), 1, dtype=torch.uint8), torch.full((16,), 2, dtype=torch.uint8)]
    restored: list[tuple[int, torch.Tensor]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: states)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda t, i: restored.append((i, t)))
    state = capture_rng_state()
    assert state["cuda"] is states
    restore_rng_state({"cuda": state["cuda"]})
    assert [(i, t[0].item()) for i, t in restored] == [(0, 1), (1, 2)]


def test_cuda_state_mismatch_warns(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    cuda = [torch.zeros(16, dtype=torch.uint8)] * 2
    caplog.set_level(logging.WARNING, logger=rng.__name__)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    restore_rng_state({"cuda": cuda})
    assert "CUDA is not available" in caplog.text

    restored: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda t, i: restored.append(i))
    restore_rng_state({"cuda": cuda})
    assert restored == [0]
    assert "for 2 device(s), this machine has 1" in caplog.text
