"""Data parallelism for every model family: DDP (default) or FSDP2 (`fully_shard`), and the
batch slicing that makes N ranks train on exactly the global batch one process would see.

- `RankSlice` wraps a batch source: every rank draws the same global batch (same loader position,
  same masking RNG) and keeps rows [r*B/W, (r+1)*B/W). The loader state is the global position,
  so a run resumes on any world size, and a run on W ranks sees the same data as one process.
- `wrap_for_data_parallel` returns the module to train. DDP all-reduces gradients (averaging);
  FSDP2 shards parameters, gradients and optimizer state per layer (each module of a `layers`
  list is one unit, then the root). With expert parallelism the experts differ per rank, so DDP
  is replaced by an explicit sync (`GradSync`): replicated gradients averaged by all_reduce,
  expert gradients (already summed over every rank's tokens by the all_to_all backward) divided
  by W to match the averaged objective.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from frugalformers.dist.env import DistEnv
from frugalformers.dist.expert_parallel import sharded_param_ids

MODES = ("ddp", "fsdp")


class RankSlice:
    """This rank's rows of the global batches of `source` (which keeps the global position).

    Every rank builds the whole global batch (the loader is cheap next to a training step) so that
    masking and span sampling match one process exactly; `TokenLoader(rank=, world=)` reads
    disjoint strides instead but ties the data order to the world size."""

    def __init__(self, source, env: DistEnv):
        if source.batch_size % env.world_size:
            raise ValueError(
                f"data.batch_size={source.batch_size} (the global batch) does not split over "
                f"{env.world_size} ranks; use a multiple of {env.world_size}"
            )
        self.source, self.env = source, env
        self.rows = source.batch_size // env.world_size

    def next_batch(self) -> dict:
        batch = self.source.next_batch()
        lo = self.env.rank * self.rows
        return {k: v[lo : lo + self.rows] for k, v in batch.items()}

    def state_dict(self) -> dict:
        return self.source.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.source.load_state_dict(state)

    @property
    def tokens_per_batch(self) -> int:
        """Tokens of the global batch (what one optimizer step consumes across ranks)."""
        return self.source.tokens_per_batch


class GradSync:
    """Explicit gradient sync for expert-parallel training (DDP cannot skip the expert shards)."""

    def __init__(self, model: nn.Module, env: DistEnv):
        expert_ids = sharded_param_ids(model)
        params = [p for p in model.parameters() if p.requires_grad]
        self.replicated = [p for p in params if id(p) not in expert_ids]
        self.experts = [p for p in params if id(p) in expert_ids]
        self.world = env.world_size

    def __call__(self) -> None:
        grads = [p.grad for p in self.replicated if p.grad is not None]
        if grads:
            flat = torch._utils._flatten_dense_tensors(grads)
            dist.all_reduce(flat)
            flat /= self.world
            for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads), strict=True):
                g.copy_(synced)
        for p in self.experts:
            if p.grad is not None:
                p.grad /= self.world

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        """Clip by the global norm over replicated and (all ranks') expert gradients."""
        rep = [p.grad for p in self.replicated if p.grad is not None]
        exp = [p.grad for p in self.experts if p.grad is not None]
        dev = (rep or exp)[0].device
        sq_rep = sum((g.float().pow(2).sum() for g in rep), torch.zeros((), device=dev))
        sq_exp = sum((g.float().pow(2).sum() for g in exp), torch.zeros((), device=dev))
        dist.all_reduce(sq_exp)
        norm = (sq_rep + sq_exp).sqrt()
        scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        for g in rep + exp:
            g.mul_(scale.to(g.dtype))
        return norm


def layer_units(model: nn.Module) -> list[nn.Module]:
    """The FSDP2 units: every module of every `layers` ModuleList (encoder, decoder, ...)."""
    units = []
    for name, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and name.split(".")[-1] == "layers":
            units.extend(m)
    return units


def wrap_for_data_parallel(model: nn.Module, mode: str, env: DistEnv) -> tuple[nn.Module, GradSync | None]:
    """(module to train, explicit grad sync or None). One process: the model itself."""
    if mode not in MODES:
        raise ValueError(f"parallel={mode!r} is not one of {MODES}")
    if not env.distributed:
        return model, None
    if sharded_param_ids(model):
        if mode == "fsdp":
            raise ValueError(
                "expert_parallel=true runs with parallel=ddp (FSDP2 + expert parallelism is not supported)"
            )
        return model, GradSync(model, env)
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [env.device.index] if env.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids), None
    from torch.distributed.fsdp import fully_shard

    shared = _shared_modules(model)
    for m in shared:  # a module used by several layers (the MoWE bank) is its own unit
        fully_shard(m)
    for unit in layer_units(model):
        fully_shard(unit)
    fully_shard(model)
    return model, None


def _shared_modules(model: nn.Module) -> list[nn.Module]:
    """Modules reachable under more than one layer (e.g. one MoWE bank shared by all MoWE layers)."""
    seen: dict[int, int] = {}
    mods = {}
    for unit in layer_units(model):
        for m in unit.modules():
            if m is unit:
                continue
            seen[id(m)] = seen.get(id(m), 0) + 1
            mods[id(m)] = m
    return [mods[i] for i, c in seen.items() if c > 1]
