"""World-size-independent training state: full tensors keyed by parameter name.

Model weights are saved as full tensors whatever the sharding (FSDP2 shards are gathered with
`full_tensor()`, expert-parallel shards with an all_gather), and the optimizer state is keyed by
parameter name instead of position, with full tensors too. Such a checkpoint loads into one
process, into DDP, FSDP2 or expert parallelism on any number of ranks: weights are loaded into the
plain model before it is sharded, and optimizer tensors are cut to each rank's shard on load.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from frugalformers.dist.expert_parallel import expert_placement, gather_experts


def _is_dtensor(t) -> bool:
    return type(t).__name__ == "DTensor"


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """`t` itself, or the whole tensor behind an FSDP2 (DTensor) shard (collective)."""
    return t.full_tensor() if _is_dtensor(t) else t


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """`t` itself, or this rank's shard of an FSDP2 (DTensor) parameter (no communication)."""
    return t.to_local() if _is_dtensor(t) else t


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module under DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


@contextlib.contextmanager
def unsharded(model: nn.Module):
    """Full parameters on every rank inside the block (FSDP2 units unsharded, then resharded), so
    code that calls submodules directly (evaluation, generation: `encode`, `cross_kv`) sees plain
    tensors. Units keep their parameters after a forward inside the block (FSDP2 would otherwise
    reshard a layer after it runs, under code that calls its submodules next)."""
    root = unwrap(model)
    units = [m for m in root.modules() if hasattr(m, "unshard") and hasattr(m, "reshard")]
    for m in units:
        if m is not root:
            m.set_reshard_after_forward(False, recurse=False)
        m.unshard()
    try:
        yield root
    finally:
        for m in units:
            m.reshard()
            if m is not root:
                m.set_reshard_after_forward(True, recurse=False)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full state dict on every rank (collective when sharded: every rank calls it)."""
    model = unwrap(model)
    state = {k: full_tensor(v.detach() if isinstance(v, torch.Tensor) else v) for k, v in model.state_dict().items()}
    return gather_experts(model, state)  # expert-parallel shards (none: unchanged)


def _param_names(model: nn.Module) -> dict[int, str]:
    return {id(p): n for n, p in unwrap(model).named_parameters()}


def optimizer_state_by_name(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Optimizer state with parameters named and tensors full (collective when sharded)."""
    names, experts = _param_names(model), expert_placement(unwrap(model))
    state = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            entry = {}
            for k, v in optimizer.state.get(p, {}).items():
                if isinstance(v, torch.Tensor) and v.dim() > 0:
                    v = full_tensor(v)
                    if id(p) in experts:
                        v = experts[id(p)].gather(v)
                    v = v.cpu()
                elif isinstance(v, torch.Tensor):
                    v = full_tensor(v).cpu()
                entry[k] = v
            if entry:
                state[names[id(p)]] = entry
    groups = [
        {**{k: v for k, v in g.items() if k != "params"}, "params": [names[id(p)] for p in g["params"]]}
        for g in optimizer.param_groups
    ]
    return {"by_name": True, "state": state, "param_groups": groups}


def load_optimizer_state_by_name(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Load `optimizer_state_by_name` output into `optimizer`, cutting each full tensor to this
    rank's FSDP2 or expert shard. An older position-keyed state loads as it is."""
    if not saved.get("by_name"):
        optimizer.load_state_dict(saved)
        return
    names, experts = _param_names(model), expert_placement(unwrap(model))
    index, state, groups = 0, {}, []
    for g, saved_group in zip(optimizer.param_groups, saved["param_groups"], strict=True):
        ids = []
        for p in g["params"]:
            name = names[id(p)]
            entry = saved["state"].get(name)
            if entry is not None:
                loaded = {}
                for k, v in entry.items():
                    if isinstance(v, torch.Tensor) and v.dim() > 0:
                        if id(p) in experts:
                            v = experts[id(p)].local_slice(v)
                        if _is_dtensor(p):
                            from torch.distributed.tensor import distribute_tensor

                            v = distribute_tensor(v.to(p.device_mesh.device_type), p.device_mesh, p.placements)
                        else:
                            v = v.to(p.device)
                    loaded[k] = v
                state[index] = loaded
            ids.append(index)
            index += 1
        groups.append({**{k: v for k, v in saved_group.items() if k != "params"}, "params": ids})
    optimizer.load_state_dict({"state": state, "param_groups": groups})
