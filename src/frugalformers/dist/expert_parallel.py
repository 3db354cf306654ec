"""Expert parallelism: the experts of an MoE layer (or of the shared MoWE bank) are split across
the ranks of a group, and tokens travel to the rank holding their expert and back by
`all_to_all_single` (the torchtitan / GShard scheme).

Expert e lives on rank e // E_local (contiguous blocks of E_local = E / W experts). Every rank
routes its own tokens over all E experts with the full (replicated) router, so routing decisions
are exactly those of the single-process layer on the same tokens; only where the expert FFN runs
changes.

Two exchanges:
- `exchange_equal` (static splits, capacity-based routing such as experts-choose): every expert
  holds the same number of slots on every rank, so split sizes are known without communication.
  Every rank must then hold the same number of tokens (the trainer's equal batch slices do).
- `exchange_sorted` (variable splits, dropless / tokens-choose / MoWE): rows sorted by expert with
  per-expert counts. The counts travel first (one small all_to_all), then the split sizes must be
  read on the host: this is the one device-to-host sync of the dropless path.

`AllToAll` is autograd-aware: its backward is the reverse all_to_all of the gradient, so the
gradient of an expert weight on its owner sums the contributions of every rank's tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from frugalformers.nn.moe import MoEFeedForward
from frugalformers.nn.word_experts import WordExpertBank


class AllToAll(torch.autograd.Function):
    """Rows of `x` split by `send` go to ranks 0..W-1; `recv` rows arrive from each rank."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, send: list[int], recv: list[int], group) -> torch.Tensor:
        ctx.send, ctx.recv, ctx.group = send, recv, group
        out = x.new_empty((sum(recv), *x.shape[1:]))
        dist.all_to_all_single(out, x.contiguous(), recv, send, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        back = grad.new_empty((sum(ctx.send), *grad.shape[1:]))
        dist.all_to_all_single(back, grad.contiguous(), ctx.send, ctx.recv, group=ctx.group)
        return back, None, None, None


@dataclass
class SortedHandle:
    """What `combine_sorted` needs to send results back: the regrouping order and split sizes."""

    order: torch.Tensor
    send: list[int]
    recv: list[int]


class ExpertParallel:
    """The expert-parallel placement of one layer (or bank) of `n_experts` over `group`."""

    def __init__(self, n_experts: int, group=None):
        self.group = group
        self.world = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        if n_experts % self.world:
            raise ValueError(
                f"n_experts={n_experts} does not divide over {self.world} expert-parallel ranks; "
                f"use a number of experts divisible by the group size"
            )
        self.n_experts = n_experts
        self.n_local = n_experts // self.world
        self.first = self.rank * self.n_local  # global index of this rank's first expert

    def local_slice(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's experts of a stacked (E, ...) tensor."""
        return t[self.first : self.first + self.n_local]

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """Inverse of `local_slice`: every rank's (E_local, ...) shard -> the full (E, ...) tensor (collective)."""
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t.contiguous(), group=self.group)
        return torch.cat(parts)

    # ---------------------------------------------------------------- static splits
    def exchange_equal(self, h: torch.Tensor) -> torch.Tensor:
        """h (E, C, d), every expert's C slots from this rank -> (E_local, W*C, d): this rank's
        experts with the slots of every rank (source-rank major)."""
        E, C, d = h.shape
        W, El = self.world, self.n_local
        rows = [El * C] * W
        got = AllToAll.apply(h.reshape(E * C, d), rows, rows, self.group)  # (W*El*C, d) by source
        return got.reshape(W, El, C, d).transpose(0, 1).reshape(El, W * C, d)

    def combine_equal(self, out: torch.Tensor) -> torch.Tensor:
        """Inverse of `exchange_equal`: (E_local, W*C, d) -> (E, C, d) on the tokens' ranks."""
        El, WC, d = out.shape
        W = self.world
        C = WC // W
        rows = [El * C] * W
        send = out.reshape(El, W, C, d).transpose(0, 1).reshape(W * El * C, d)
        return AllToAll.apply(send, rows, rows, self.group).reshape(W * El, C, d)

    # ---------------------------------------------------------------- variable splits
    def exchange_sorted(self, h: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, SortedHandle]:
        """h (P, d) sorted by global expert, counts (E,) -> rows for this rank's experts sorted by
        local expert (P_local, d), their counts (E_local,), and the handle to send results back."""
        W, El = self.world, self.n_local
        per_rank = counts.reshape(W, El)
        got_counts = torch.empty_like(per_rank)
        dist.all_to_all_single(got_counts, per_rank.contiguous(), group=self.group)  # (W_src, El)
        splits = torch.stack([per_rank.sum(1), got_counts.sum(1)]).cpu()  # the one device-to-host sync
        send, recv = splits[0].tolist(), splits[1].tolist()
        got = AllToAll.apply(h, send, recv, self.group)  # (sum recv, d): source-major, expert-minor
        local_expert = torch.arange(El, device=h.device).repeat(W).repeat_interleave(got_counts.reshape(-1))
        order = local_expert.argsort(stable=True)  # regroup by local expert
        return got.index_select(0, order), got_counts.sum(0), SortedHandle(order, send, recv)

    def combine_sorted(self, out: torch.Tensor, handle: SortedHandle) -> torch.Tensor:
        """Inverse of `exchange_sorted`: results (P_local, d) -> (P, d) in the sender's order."""
        unsorted = out.new_zeros(out.shape).index_copy(0, handle.order, out)
        return AllToAll.apply(unsorted, handle.recv, handle.send, self.group)

    def run_sorted(self, h: torch.Tensor, counts: torch.Tensor, experts) -> torch.Tensor:
        """`experts(rows, counts)` on this rank's experts for rows h (P, d) sorted by global expert
        with counts (E,); the results come back (P, d) in h's order (exchange, run, combine)."""
        h_local, counts_local, handle = self.exchange_sorted(h, counts)
        return self.combine_sorted(experts(h_local, counts_local), handle)


def expert_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules that hold stacked experts: MoE layers and (once each) MoWE banks."""

    seen, out = set(), []
    for m in model.modules():
        if isinstance(m, (MoEFeedForward, WordExpertBank)) and id(m) not in seen:
            seen.add(id(m))
            out.append(m)
    return out


def shard_experts(model: torch.nn.Module, group=None) -> list[str]:
    """Keep only this rank's experts in every MoE layer and MoWE bank of `model` and attach the
    placement (`module.ep`); return the names of the sharded parameters (first name of each).
    The router stays replicated. Call before wrapping for data parallelism."""
    names = []
    ids = {id(m) for m in expert_modules(model)}
    for prefix, m in model.named_modules(remove_duplicate=True):
        if id(m) not in ids:
            continue
        ep = ExpertParallel(m.n_experts, group)
        for pname in m.expert_param_names:
            p = getattr(m, pname)
            if p is None:
                continue
            setattr(m, pname, torch.nn.Parameter(ep.local_slice(p.detach()).clone(), requires_grad=p.requires_grad))
            names.append(f"{prefix}.{pname}" if prefix else pname)
        m.ep = ep
    return names


def expert_placement(model: torch.nn.Module) -> dict[int, ExpertParallel]:
    """id(parameter) -> its placement, for every expert-sharded parameter of `model`."""
    return {
        id(getattr(m, n)): m.ep
        for m in expert_modules(model)
        if getattr(m, "ep", None) is not None
        for n in m.expert_param_names
        if getattr(m, n) is not None
    }


def sharded_param_ids(model: torch.nn.Module) -> set[int]:
    return set(expert_placement(model))


def gather_experts(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with every expert-sharded tensor gathered to its full (E, ...) size (collective:
    every rank calls it, in the same module order). Names come from the module tree with duplicates,
    so a shared bank is gathered once and stored under each of its aliases."""
    out, full_by_id = dict(state), {}
    for prefix, m in model.named_modules(remove_duplicate=False):
        ep = getattr(m, "ep", None)
        if ep is None or not hasattr(m, "expert_param_names"):
            continue
        for n in m.expert_param_names:
            p = getattr(m, n)
            if p is None:
                continue
            if id(p) not in full_by_id:
                full_by_id[id(p)] = ep.gather(p.detach())
            out[f"{prefix}.{n}" if prefix else n] = full_by_id[id(p)]
    return out
