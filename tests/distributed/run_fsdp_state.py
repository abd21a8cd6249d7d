"""One rank of an FSDP2 run on CPU (gloo), for ``test_fsdp_state.py``; started by torchrun with 2 processes.

accelerate enables FSDP only on GPUs, so this drives torch's ``fully_shard`` directly to exercise
``statetrain.checkpoint.fsdp``: train two steps sharded, gather the full model and optimizer state,
write them as a checkpoint would (rank 0, safetensors + JSON), rebuild a fresh sharded model from
those files, take one more step on both, and compare the full states. Rank 0 writes ``result.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import safetensors.torch  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.distributed.fsdp import fully_shard  # noqa: E402

from statetrain.checkpoint.fsdp import (  # noqa: E402
    gather_model_state,
    gather_optimizer_state,
    is_fsdp,
    load_optimizer_state,
)
from statetrain.checkpoint.tensor_tree import load_tree, save_tree  # noqa: E402


def build(mesh: Any, weights: Path | None = None) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    if weights is not None:  # full weights into the plain model, before sharding (as the Trainer loads them)
        safetensors.torch.load_model(model, str(weights))
    for layer in (model[0], model[2]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model, torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1)


def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed * 10 + dist.get_rank())
    x, y = torch.randn(4, 8, generator=g), torch.randint(0, 4, (4,), generator=g)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    optimizer.zero_grad()


def main() -> int:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    model, optimizer = build(mesh)
    plain = torch.nn.Linear(2, 2)
    result: dict[str, Any] = {"world_size": dist.get_world_size(), "plain_is_fsdp": is_fsdp(plain)}
    result["is_fsdp"] = is_fsdp(model)
    result["plain_state_is_none"] = gather_model_state(plain) is None
    step(model, optimizer, 1)
    step(model, optimizer, 2)
    model_state = gather_model_state(model)
    optimizer_state = gather_optimizer_state(model, optimizer)
    assert model_state is not None and optimizer_state is not None
    if dist.get_rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        safetensors.torch.save_file(model_state, str(out / "model.safetensors"))
        save_tree(optimizer_state, out, "optimizer")
        result["model_keys"] = sorted(model_state)
        result["local_shape_0"] = list(next(iter(model.parameters())).to_local().shape)
    else:
        result["empty_off_main"] = model_state == {} and optimizer_state == {}
    dist.barrier()
    restored, restored_optimizer = build(mesh, out / "model.safetensors")
    load_optimizer_state(restored, restored_optimizer, load_tree(out, "optimizer"))
    step(model, optimizer, 3)
    step(restored, restored_optimizer, 3)
    after = [gather_model_state(model), gather_model_state(restored)]
    after_optimizer = [gather_optimizer_state(model, optimizer), gather_optimizer_state(restored, restored_optimizer)]
    if dist.get_rank() == 0:
        a, b = after
        assert a is not None and b is not None
        result["params_equal"] = all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()
        sa, sb = (s["state"] for s in after_optimizer)  # type: ignore[index]
        result["optimizer_equal"] = sa.keys() == sb.keys() and all(
            torch.equal(torch.as_tensor(sa[n][k]), torch.as_tensor(sb[n][k])) for n in sa for k in sa[n]
        )
        result["moved"] = float(max((a[k] - model_state[k]).abs().max() for k in a))
        (out / "result.json").write_text(json.dumps(result), encoding="utf-8")
    else:
        (out.parent / f"{out.name}-rank1.json").write_text(json.dumps(result), encoding="utf-8")
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
