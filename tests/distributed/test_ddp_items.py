"""``average_tokens_across_devices`` in two real CPU processes (torchrun, gloo).

Rows carry uneven numbers of label items, so each process's share of a window differs. With the
option on (HF's default) the window's item count is summed across processes: two processes with
batch 2 train exactly like one process with batch 4, for a model that takes ``num_items_in_batch``
and for one that does not (statetrain's item weights, docs/differences.md 15). With it off each
process normalises by its own count and the result drifts, which shows the sum is what matters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from tests.distributed.launching import TORCHRUN, run_launched
from tests.distributed.run_ddp_items import DEFAULTS, build_trainer

SCRIPT = Path(__file__).with_name("run_ddp_items.py")

SCENARIOS = {
    "kwargs": {"model": "kwargs", "average": True},
    "plain": {"model": "plain", "average": True},
    "kwargs_local": {"model": "kwargs", "average": False},
}


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("ddp_items")
    config = tmp / "config.json"
    scenarios = [{**changes, "out": str(tmp / name)} for name, changes in SCENARIOS.items()]
    config.write_text(json.dumps({"scenarios": scenarios}), encoding="utf-8")
    done = run_launched([*TORCHRUN, str(SCRIPT), str(config)])
    assert done.returncode == 0, f"torchrun exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return tmp


def ranks(out: Path) -> list[dict[str, Any]]:
    found = [json.loads((out / f"result_{rank}.json").read_text(encoding="utf-8")) for rank in (0, 1)]
    for result in found:
        assert result["world_size"] == result["accelerate_processes"] == result["torch_world_size"] == 2, result
    return found


def one_process(tmp_path: Path, name: str) -> Any:
    config = {**DEFAULTS, **SCENARIOS[name], "out": str(tmp_path / name), "use_cpu": True}
    trainer = build_trainer(config, batch=2 * config["batch"])
    assert trainer.args.world_size == 1
    trainer.train()
    return trainer


def worst_difference(out: Path, reference: Any) -> float:
    params = load_file(str(out / "params.safetensors"))
    expected = {name: p.detach() for name, p in reference.model.named_parameters()}
    assert params.keys() == expected.keys()
    return max(float((params[name] - expected[name]).abs().max()) for name in expected)


@pytest.mark.parametrize("name", ["kwargs", "plain"])
def test_two_processes_equal_one_process_on_the_global_batch(launched: Path, tmp_path: Path, name: str) -> None:
    found = ranks(launched / name)
    reference = one_process(tmp_path, name)
    assert worst_difference(launched / name, reference) < 1e-6
    reference_losses = [e["loss"] for e in reference.state.log_history if "loss" in e]
    assert found[0]["losses"] == found[1]["losses"] == pytest.approx(reference_losses, abs=1e-6)
    if name == "kwargs":
        # every forward on both processes was given the global window's count, the one-process count
        per_window = [n for i, n in enumerate(reference.model.given) if i % DEFAULTS["accumulation"] == 0]
        for result in found:
            assert result["given"][:: DEFAULTS["accumulation"]] == per_window


def test_without_averaging_each_process_uses_its_own_count(launched: Path, tmp_path: Path) -> None:
    found = ranks(launched / "kwargs_local")
    assert found[0]["given"] != found[1]["given"], "the rows must give the two processes different counts"
    reference = one_process(tmp_path, "kwargs")
    assert worst_difference(launched / "kwargs_local", reference) > 1e-4
