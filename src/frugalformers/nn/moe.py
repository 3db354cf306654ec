"""Mixture-of-Experts feed-forward with pluggable routing (Sparse Mixer, Lee-Thorp & Ainslie 2022;
official `sparse_mixers/routing.py` and `layers.py` MoeLayer).

Tokens are flattened to (N, d) and split into `G` groups of at most `max_group_size` tokens (the
smallest G >= N // max_group_size dividing N); routing is per group. Routers (logits, softmax,
top-k, losses) run in float32 whatever the autocast dtype. Experts are stacked weights
(E, d, d_ff) / (E, d_ff, d) run as batched matmuls; dispatch is a gather and combine an
`index_add_`, never a dense one-hot [tokens, experts, capacity] tensor.

Gathers are `index_select` and scatters `index_add` / `index_copy`, never advanced indexing
(`x[idx]`): on CUDA the backward of advanced indexing sorts the indices (pytorch#15245, #41162),
that of `index_select` adds atomically.

Routing (`routing=`):
- `experts_choose` (Zhou et al. 2022; Sparse Mixer's default): each expert takes its top-C tokens
  of the group by router probability, C = max(round(cf * T / E), min_capacity); a token's expert
  outputs are summed, weighted by its router probabilities. No balancing loss is needed.
- `tokens_choose`: each token picks its top-k experts; with Batch Prioritized Routing tokens are
  served in order of their top-1 probability, top-1 choices before top-2; a token over an expert's
  capacity C = max(round(cf * T / E), min_capacity) is dropped (its residual passes on; the
  official `MoeLayer` does not scale C by k); Switch load-balancing loss over every selected
  expert (official `_load_balancing_loss`).
- `dropless`: tokens-choose with no capacity: tokens sorted by expert, one grouped GEMM
  (`torch._grouped_mm` on CUDA bf16 when available) or a padded batched matmul elsewhere.

Losses come back weighted as in the official configs: balance x 0.01 (`aux_loss_factor`) and
router z-loss x 1e-4 (`z_loss_factor`), ready to add to the task loss.

Eval determinism: with group routing a token's output depends on the other tokens of its group.
`per_example_groups=True` routes each example (each batch row) as its own group.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from frugalformers.nn import grouped_experts
from frugalformers.nn.ffn import activation_fn
from frugalformers.nn.precision import autocast_off, compute_dtype
from frugalformers.options import MoEOptions

ROUTINGS = ("experts_choose", "tokens_choose", "dropless")


def num_groups(n_tokens: int, max_group_size: int) -> int:
    """The smallest G >= n_tokens // max_group_size that divides n_tokens (official rule)."""
    g = max(1, n_tokens // max_group_size)
    while n_tokens % g:
        g += 1
    return g


def capacity(cf: float, tokens_per_group: int, n_experts: int, minimum: int = 4) -> int:
    """Slots per expert and group: max(round(cf * T / E), minimum), at most T (official `MoeLayer`:
    the same for experts-choose and for tokens-choose with any k)."""
    return min(tokens_per_group, max(int(round(cf * tokens_per_group / n_experts)), minimum))


@dataclass
class Routing:
    """Which (token, expert) pairs run and with what combine weight, flattened:
    token index (P,), expert index (P,), weight (P,); plus the float32 losses and expert load."""

    token: torch.Tensor
    expert: torch.Tensor
    weight: torch.Tensor
    balance_loss: torch.Tensor
    z_loss: torch.Tensor
    load: torch.Tensor  # (E,) fraction of routed (token, expert) slots per expert


class Router(nn.Module):
    """Dense(d -> E) with bias (init normal 0.02 / zeros), computed in float32, optional jitter."""

    def __init__(self, d_model: int, n_experts: int, jitter: float = 0.0):
        super().__init__()
        self.proj = nn.Linear(d_model, n_experts)
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)
        self.jitter = jitter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (G, T, d) -> logits (G, T, E) in float32."""
        x = x.float()
        if self.training and self.jitter > 0:
            x = x * torch.empty_like(x).uniform_(1 - self.jitter, 1 + self.jitter)
        with autocast_off(x):
            return F.linear(x, self.proj.weight.float(), self.proj.bias.float())


def z_loss(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE router z-loss: mean over tokens of logsumexp(logits)^2."""
    return torch.logsumexp(logits, -1).pow(2).mean()


def switch_balance_loss(probs: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Switch Transformer eq. 4-6 per group, averaged: E * sum_e f_e P_e, with f_e the fraction of
    tokens that selected e among their top-k choices `experts` (G, T, k) and P_e the mean router
    probability of e (official `_load_balancing_loss`: one-hot over the k choices, max over k)."""
    E = probs.shape[-1]
    f = F.one_hot(experts, E).amax(-2).float().mean(-2)  # (G, T, k, E) -> (G, T, E) -> (G, E)
    p = probs.mean(-2)  # (G, E)
    return (f * p).sum(-1).mean() * E


def route_experts_choose(probs: torch.Tensor, cap: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """probs (G, T, E) -> token (G, E, C), weight (G, E, C): each expert's top-C tokens."""
    weight, token = probs.transpose(1, 2).topk(cap, dim=-1)  # (G, E, C)
    return token, weight, torch.full(token.shape, True, device=token.device)


def route_tokens_choose(probs: torch.Tensor, k: int, cap: int | None, bpr: bool = True):
    """probs (G, T, E) -> expert (G, T, k), weight (G, T, k), keep (G, T, k) (False: over capacity).

    Slots are filled top-1 choices first, then top-2, ...; within a choice rank tokens go in
    order of their top-1 probability (Batch Prioritized Routing) or in sequence order."""
    G, T, E = probs.shape
    weight, expert = probs.topk(k, dim=-1)  # (G, T, k)
    if cap is None:
        return expert, weight, torch.ones_like(weight, dtype=torch.bool)
    order = (
        weight[..., 0].argsort(-1, descending=True) if bpr else torch.arange(T, device=probs.device).expand(G, T)
    )  # (G, T): serving order
    keep = torch.zeros_like(weight, dtype=torch.bool)
    used = torch.zeros(G, E, dtype=torch.long, device=probs.device)
    for j in range(k):  # top-1 choices get priority over top-2
        e_sorted = expert[..., j].gather(1, order)  # (G, T) experts in serving order
        onehot = F.one_hot(e_sorted, E)  # (G, T, E)
        pos = (onehot.cumsum(1) - 1 + used[:, None, :]) * onehot  # slot each token would take
        slot = pos.sum(-1)  # (G, T)
        ok_sorted = slot < cap
        keep[..., j] = torch.zeros_like(ok_sorted).scatter(1, order, ok_sorted)
        used = used + (onehot * ok_sorted[..., None]).sum(1)
    return expert, weight, keep


class MoEFeedForward(nn.Module):
    """Top-level MoE feed-forward: router + stacked experts + dispatch/combine.

    Returns `(y, {"moe_balance": ..., "moe_z": ...})` with the losses already weighted.

    Expert parallelism (`frugalformers.dist.expert_parallel.shard_experts`) keeps only this rank's
    experts in the stacked weights and sets `ep`; tokens then travel to their expert's rank."""

    expert_param_names = ("w_in", "w_gate", "w_out", "b_in", "b_out")

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        n_experts: int = MoEOptions.n_experts,
        routing: str = MoEOptions.routing,
        capacity_factor: float = MoEOptions.capacity_factor,
        eval_capacity_factor: float | None = MoEOptions.eval_capacity_factor,
        top_k: int = MoEOptions.top_k,
        min_capacity: int = MoEOptions.min_capacity,
        max_group_size: int = MoEOptions.max_group_size,
        batch_prioritized: bool = MoEOptions.batch_prioritized,
        jitter: float = MoEOptions.jitter,
        activation: str = "gelu",
        gated: bool = False,
        bias: bool = True,
        expert_dropout: float = MoEOptions.expert_dropout,
        aux_loss_factor: float = MoEOptions.aux_loss_factor,
        z_loss_factor: float = MoEOptions.z_loss_factor,
        per_example_groups: bool = MoEOptions.per_example_groups,
    ):
        super().__init__()
        if routing not in ROUTINGS:
            raise ValueError(f"routing={routing!r} is not one of {ROUTINGS}")
        if n_experts < 1:
            raise ValueError(f"n_experts={n_experts} must be >= 1")
        if top_k < 1 or top_k > n_experts:
            raise ValueError(f"top_k={top_k} must be between 1 and n_experts={n_experts}")
        if capacity_factor <= 0:
            raise ValueError(f"capacity_factor={capacity_factor} must be positive")
        self.n_experts, self.routing, self.top_k = n_experts, routing, top_k
        self.cf, self.eval_cf = capacity_factor, eval_capacity_factor or capacity_factor
        self.min_capacity, self.max_group_size, self.bpr = min_capacity, max_group_size, batch_prioritized
        self.aux_loss_factor, self.z_loss_factor = aux_loss_factor, z_loss_factor
        self.per_example_groups = per_example_groups
        self.router = Router(d_model, n_experts, jitter)
        self.act = activation_fn(activation)
        self.w_in = nn.Parameter(torch.randn(n_experts, d_model, d_ff) * 0.02)
        self.w_gate = nn.Parameter(torch.randn(n_experts, d_model, d_ff) * 0.02) if gated else None
        self.w_out = nn.Parameter(torch.randn(n_experts, d_ff, d_model) * 0.02)
        self.b_in = nn.Parameter(torch.zeros(n_experts, 1, d_ff)) if bias else None
        self.b_out = nn.Parameter(torch.zeros(n_experts, 1, d_model)) if bias else None
        self.dropout = nn.Dropout(expert_dropout)
        self.last_load: torch.Tensor | None = None
        self.ep = None  # an ExpertParallel placement when the experts are sharded over ranks

    # ---------------------------------------------------------------- experts
    def experts(self, h: torch.Tensor) -> torch.Tensor:
        """Stacked expert FFNs: h (E, C, d) -> (E, C, d) by batched matmuls."""
        # biases ride in the GEMM (baddbmm): one pass over the activations instead of two
        a = torch.bmm(h, self.w_in) if self.b_in is None else torch.baddbmm(self.b_in, h, self.w_in)  # (E, C, d_ff)
        if self.w_gate is not None:
            a = self.act(torch.bmm(h, self.w_gate)) * a
        else:
            a = self.act(a)
        out = torch.bmm(a, self.w_out) if self.b_out is None else torch.baddbmm(self.b_out, a, self.w_out)
        return self.dropout(out)

    def expert_one(self, e: int, h: torch.Tensor) -> torch.Tensor:
        """Expert e on tokens h (n, d): the plain reference of `experts`."""
        a = h @ self.w_in[e] + (self.b_in[e] if self.b_in is not None else 0)
        a = self.act(h @ self.w_gate[e]) * a if self.w_gate is not None else self.act(a)
        return a @ self.w_out[e] + (self.b_out[e] if self.b_out is not None else 0)

    # ---------------------------------------------------------------- routing
    def route(self, xg: torch.Tensor) -> Routing:
        """xg (G, T, d) -> the flattened routing over token indices of the (G*T) flattening.
        Experts-choose pairs come expert-major ((E, G, C) flattened), tokens-choose token-major."""
        G, T, _ = xg.shape
        E = self.n_experts
        logits = self.router(xg)  # (G, T, E) float32
        probs = logits.softmax(-1)
        zl = z_loss(logits)
        offsets = (torch.arange(G, device=xg.device) * T)[:, None, None]
        cf = self.cf if self.training else self.eval_cf
        if self.routing == "experts_choose":
            cap = capacity(cf, T, E, self.min_capacity)
            token, weight, _ = route_experts_choose(probs, cap)  # (G, E, C)
            # flattened expert-major, (E, G, C): the gather then lands in the experts' (E, G*C, d)
            # layout directly, with no copy of the activations to reorder them
            flat_token = (token + offsets).transpose(0, 1).reshape(-1)  # (E*G*C,)
            weight = weight.transpose(0, 1)  # (E, G, C)
            expert = torch.arange(E, device=xg.device)[:, None, None].expand_as(weight)
            balance = torch.zeros((), device=xg.device)
            keep = None
        else:
            cap = None if self.routing == "dropless" else capacity(cf, T, E, self.min_capacity)
            expert, weight, keep = route_tokens_choose(probs, self.top_k, cap, self.bpr)  # (G, T, k)
            token = torch.arange(T, device=xg.device)[None, :, None].expand_as(expert)
            balance = switch_balance_loss(probs, expert)
            flat_token = (token + offsets).reshape(-1)
        expert, weight = expert.reshape(-1), weight.reshape(-1)
        if keep is not None and xg.device.type != "meta":  # (meta: FLOP counting, every slot kept)
            k = keep.reshape(-1)
            flat_token, expert, weight = flat_token[k], expert[k], weight[k]
        if self.routing == "experts_choose" or xg.device.type == "meta":  # exactly C tokens each (or meta)
            load = torch.full((E,), 1.0 / E, device=xg.device)
        else:
            load = torch.bincount(expert, minlength=E).float() / max(1, expert.numel())
        return Routing(flat_token, expert, weight, balance, zl, load)

    # ---------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x (B, T, d) -> y (B, T, d), weighted aux losses."""
        B, T, d = x.shape
        N = B * T
        G = B if self.per_example_groups else num_groups(N, self.max_group_size)
        xg = x.reshape(G, N // G, d)  # (G, T_g, d)
        r = self.route(xg)  # the router reads x itself, in float32
        flat = x.reshape(N, d).to(compute_dtype(x))  # rows move (and meet the GEMMs) in the compute dtype
        if self.routing == "experts_choose":
            E = self.n_experts
            h = flat.index_select(0, r.token).reshape(E, -1, d)  # (E, G*C, d): routing is expert-major
            if self.ep is None:
                res = self.experts(h)
            else:  # (E_local, W*G*C, d) on the experts' ranks, then back
                res = self.ep.combine_equal(self.experts(self.ep.exchange_equal(h)))
            out = res.reshape(-1, d)  # (E*G*C, d), the order of r.token
        else:
            out = self._tokens_choose_experts(flat, r)
        # combine: each pair's output weighted by its router probability, summed per token in (at least)
        # float32: a token can have several experts, and float32 atomics are native where bf16's are not
        acc = torch.promote_types(out.dtype, torch.float32)
        out = out.to(acc) * r.weight[:, None].to(acc)
        y = torch.zeros(N, d, dtype=acc, device=x.device).index_add_(0, r.token, out)
        self.last_load = r.load.detach()
        aux = {"moe_balance": r.balance_loss * self.aux_loss_factor, "moe_z": r.z_loss * self.z_loss_factor}
        return y.reshape(B, T, d).to(x.dtype), aux

    def _tokens_choose_experts(self, flat: torch.Tensor, r: Routing) -> torch.Tensor:
        """Run each kept (token, expert) pair through its expert; returns (P, d) in r's order."""
        if flat.device.type == "meta":  # FLOP counting: the routed slots spread evenly over the experts
            E, d = self.w_in.shape[0], flat.shape[1]
            return self.experts(flat.new_zeros(E, -(-r.token.numel() // E), d)).reshape(-1, d)[: r.token.numel()]
        order = r.expert.argsort(stable=True)  # tokens sorted by expert
        counts = torch.bincount(r.expert, minlength=self.n_experts)
        h = flat.index_select(0, r.token[order])  # (P, d)
        if self.ep is None:
            out_sorted = self._run_sorted(h, counts)
        else:  # rows travel to their expert's rank and back (variable splits)
            out_sorted = self.ep.run_sorted(h, counts, self._run_sorted)
        return torch.empty_like(out_sorted).index_copy(0, order, out_sorted)  # back to r's order

    def _run_sorted(self, h: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Rows h (P, d) sorted by expert, counts (E_here,) over the experts held here -> (P, d)."""
        E, d = self.w_in.shape[0], h.shape[1]
        if self.routing == "dropless" and grouped_experts.grouped_mm_applies(h, self.w_in) and self.w_gate is None:
            b_in = self.b_in.squeeze(1) if self.b_in is not None else None  # (E, d_ff)
            b_out = self.b_out.squeeze(1) if self.b_out is not None else None  # (E, d)
            return self.dropout(
                grouped_experts.grouped_expert_ffn(h, counts, self.w_in, self.w_out, self.act, b_in, b_out)
            )
        # padded batched matmul: (E, max_count, d), one bmm per weight matrix
        cmax = int(counts.max()) if counts.numel() else 0
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(h.shape[0], device=h.device) - starts.repeat_interleave(counts)
        e_sorted = torch.arange(E, device=h.device).repeat_interleave(counts)
        rows = e_sorted * max(cmax, 1) + slot  # (P,) row of each token in the flattened (E * max_count) buffer
        buf = h.new_zeros(E * max(cmax, 1), d).index_copy(0, rows, h).reshape(E, max(cmax, 1), d)
        return self.experts(buf).reshape(-1, d).index_select(0, rows)  # (P, d)
