"""CoLT5 conditional computation (Ainslie et al. 2023): a learned router picks m tokens per example
for a heavy branch; every token goes through a light branch.

Router: score s_i = x_i . u (one learned u per router), normalised by the soft top-k of CoDA
(Lei et al. 2023; CoLT5 Appendix C): the entropy-regularised problem

    maximise  s . lambda + eps * H(lambda)   s.t.  sum_i lambda_i = k,  0 <= lambda_i <= 1,

solved by dual coordinate descent with eps = 1.0 and 50 iterations (the paper's values), in
float32. Its solution is lambda_i = min(1, exp((s_i + a) / eps)) with a set so that the sum is k.
Then the hard top-m of lambda picks the routed tokens, and the heavy output is multiplied by their
lambda, which gives the router its gradient. During training the paper lets the top 9/8 k tokens
keep non-zero weight: here the normalisation targets k = 9/8 m in training and m at evaluation
(`train_k_factor`, a flag because the paper does not say more).

Two solvers of the same problem: `soft_topk` runs the paper's coordinate descent (the reference;
`solver="iterative"`), `soft_topk_exact` computes its fixed point directly (the default,
`solver="exact"`): sort the scores, and the first t for which saturating the top t leaves the next
score below 1 fixes a in closed form. The iteration costs ~10 small kernels x 50 iterations per
router call (measured on an H200: ~250 ms of fixed overhead per CoLT5-Base encoder forward); the
exact solve is a sort, a cumulative logsumexp and a few pointwise kernels. Tests hold the two to
each other (forward and backward) where the iteration has converged, and both to a brute-force
solution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from frugalformers.nn.attention import Attention
from frugalformers.nn.ffn import FeedForward
from frugalformers.nn.local_attention import LocalAttention
from frugalformers.nn.positions import RelativePositionBias
from frugalformers.nn.precision import autocast_off
from frugalformers.options import LocalAttentionOptions, RoutedOptions


def _solver_scores(scores: torch.Tensor, k: float) -> torch.Tensor:
    """The scores the solvers work on, float32 (or float64 if given), after checking 0 < k <= n."""
    n = scores.shape[-1]
    if not 0 < k <= n:
        raise ValueError(f"k={k} must be in (0, n={n}]")
    return scores if scores.dtype == torch.float64 else scores.float()


def soft_topk(scores: torch.Tensor, k: float, eps: float = 1.0, iters: int = 50) -> torch.Tensor:
    """lambda (..., n) in [0, 1] with sum k: entropy-regularised top-k by coordinate descent, float32
    (or float64 if given). Differentiable through the unrolled iterations."""
    s = _solver_scores(scores, k)
    a = torch.zeros_like(s[..., :1])
    b = torch.zeros_like(s)
    log_k = math.log(k)
    for _ in range(iters):
        a = eps * log_k - eps * torch.logsumexp((s + b) / eps, dim=-1, keepdim=True)
        b = -F.relu(s + a)
    return torch.exp((s + a + b) / eps)


def soft_topk_exact(scores: torch.Tensor, k: float, eps: float = 1.0) -> torch.Tensor:
    """The fixed point of `soft_topk`, solved directly: lambda = min(1, exp((s + a) / eps)) with
    sum k. With the scores sorted descending and the top t saturated (lambda = 1), the rest sum to
    k - t, so a_t = eps * (log(k - t) - logsumexp(s_(t..n-1) / eps)); t is the smallest count for
    which the next score stays unsaturated (s_(t) + a_t <= 0). Differentiable (through the sort)."""
    s = _solver_scores(scores, k)
    a_star = _soft_topk_offset(rank_descending(s)[0], k, eps)
    return saturated_exp((s + a_star) / eps)


def saturated_exp(z: torch.Tensor) -> torch.Tensor:
    """min(1, exp(z)) as exp(min(z, 0)): the same values, and a zero gradient where z > 0 even
    when exp(z) overflows (exp(z).clamp(max=1) gives 0 * inf = NaN there, e.g. when a row has
    fewer real tokens than k and the offset a lifts the real scores far above 0)."""
    return torch.exp(z.clamp(max=0.0))


def rank_descending(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, order) of `s` sorted descending along the last dim; one function so that a
    compiled model's sort can be checked on its own (benchmarks/colt5_compile_check.py)."""
    return s.sort(dim=-1, descending=True)


def suffix_logsumexp(x: torch.Tensor) -> torch.Tensor:
    """(..., n): logsumexp of x[..., t:] for every t (a reversed cumulative logsumexp)."""
    return x.flip(-1).logcumsumexp(-1).flip(-1)


def _soft_topk_offset(ranked: torch.Tensor, k: float, eps: float) -> torch.Tensor:
    """a (..., 1) of `soft_topk_exact` from the scores sorted descending (..., n)."""
    n = ranked.shape[-1]
    tail = suffix_logsumexp(ranked / eps)  # (..., n): logsumexp of ranked[t:]
    t = torch.arange(n, device=ranked.device, dtype=ranked.dtype)
    room = k - t  # (n,) mass left for the unsaturated tokens
    a = eps * (torch.log(room.clamp(min=torch.finfo(ranked.dtype).tiny)) - tail)  # (..., n)
    fits = (ranked + a <= 0) & (room > 0)  # saturating the top t leaves token t below 1
    first = fits.to(torch.int8).argmax(-1, keepdim=True)  # (..., 1) the smallest such t
    return a.gather(-1, first)


def soft_topk_select(scores: torch.Tensor, k: float, m: int, eps: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The hard top-m of `soft_topk_exact(scores, k)`: (indices (..., m), lambda there (..., m)).

    lambda is non-decreasing in the score, so its top m are the top m scores: the sort that solves
    for a also ranks the tokens, and no second top-k over n is needed."""
    s = _solver_scores(scores, k)
    ranked, order = rank_descending(s)  # (..., n)
    a_star = _soft_topk_offset(ranked, k, eps)
    return order[..., :m], saturated_exp((ranked[..., :m] + a_star) / eps)


ROUTER_INPUTS = ("normalized", "residual")
SOLVERS = ("exact", "iterative")


def gate(weight: torch.Tensor, straight_through: bool) -> torch.Tensor:
    """The multiplier of a heavy output: the normalised routing score (the paper), or with
    `straight_through` 1 in the forward pass and the score's gradient in the backward pass."""
    return weight - weight.detach() + 1.0 if straight_through else weight


def router_input(x: torch.Tensor, ctx, reads: str) -> torch.Tensor:
    """What the routers score: the block's normalised input `x` (default) or the residual stream
    before the norm (`ctx.extras["residual"]`, set by the layer)."""
    if reads == "normalized":
        return x
    residual = ctx.extras.get("residual") if ctx is not None else None
    if residual is None:
        raise ValueError("router_input='residual' needs the layer to pass the residual stream (ctx.extras['residual'])")
    return residual


def _check_router_options(reads: str) -> None:
    if reads not in ROUTER_INPUTS:
        raise ValueError(f"router_input={reads!r} is not one of {ROUTER_INPUTS}")


def routed_count(n: int, m: int | float) -> int:
    """Routed tokens for a sequence of n: an absolute count, or a fraction of n (m = n/16 default)."""
    count = int(m) if m >= 1 else max(1, int(round(m * n)))
    return min(count, n)


class Router(nn.Module):
    """s = x . u, then soft top-k and the hard top-m: returns (indices (B, m), weights (B, m))."""

    def __init__(
        self,
        d_model: int,
        eps: float = RoutedOptions.router_eps,
        iters: int = RoutedOptions.router_iters,
        train_k_factor: float = RoutedOptions.router_train_k_factor,
        solver: str = RoutedOptions.router_solver,
    ):
        super().__init__()
        if solver not in SOLVERS:
            raise ValueError(f"solver={solver!r} is not 'exact' (closed form) or 'iterative' (coordinate descent)")
        self.u = nn.Parameter(torch.randn(d_model) * d_model**-0.5)
        self.eps, self.iters, self.train_k_factor, self.solver = eps, iters, train_k_factor, solver

    def forward(self, x: torch.Tensor, m: int, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, n, d): what the router scores (the block input, normalised or not: the caller's
        choice); mask (B, n) True for real tokens (padding is never routed first)."""
        with autocast_off(x):  # float32 scores: under autocast a float32 matmul would still run in bf16
            s = torch.matmul(x.float(), self.u.float())  # (B, n)
        if mask is not None:
            s = s.masked_fill(~mask.bool(), -1e4)
        k = min(x.shape[1], m * self.train_k_factor) if self.training else m
        if self.solver == "exact":
            return soft_topk_select(s, k, m, self.eps)  # (B, m) each: one sort ranks and normalises
        lam = soft_topk(s, k, self.eps, self.iters)  # (B, n)
        weight, index = lam.topk(m, dim=-1)  # (B, m)
        return index, weight


class RoutedFeedForward(nn.Module):
    """CoLT5 conditional FFN: `light(x) + scatter(lambda_m * heavy(x_m))` (section 3.1).

    light: d_ff / 2 on every token; heavy: 4 * d_ff on the m routed tokens (the paper's r_L, r_H)."""

    def __init__(
        self,
        d_model: int,
        d_ff_light: int,
        d_ff_heavy: int,
        routed: int | float = RoutedOptions.routed_tokens,
        activation: str = "gelu_new",
        gated: bool = True,
        bias: bool = False,
        dropout: float = 0.0,
        eps: float = RoutedOptions.router_eps,
        iters: int = RoutedOptions.router_iters,
        train_k_factor: float = RoutedOptions.router_train_k_factor,
        router_input: str = RoutedOptions.router_input,
        straight_through: bool = RoutedOptions.router_straight_through,
        solver: str = RoutedOptions.router_solver,
    ):
        super().__init__()
        _check_router_options(router_input)
        self.light = FeedForward(d_model, d_ff_light, activation, gated, bias, dropout)
        self.heavy = FeedForward(d_model, d_ff_heavy, activation, gated, bias, dropout)
        self.router = Router(d_model, eps, iters, train_k_factor, solver)
        self.routed, self.router_input, self.straight_through = routed, router_input, straight_through

    takes_context = True

    def forward(self, x: torch.Tensor, ctx=None) -> torch.Tensor:
        """x (B, n, d) -> (B, n, d)."""
        B, n, d = x.shape
        m = routed_count(n, self.routed)
        mask = getattr(ctx, "key_padding_mask", None) if ctx is not None else None
        index, weight = self.router(router_input(x, ctx, self.router_input), m, mask)  # (B, m)
        gather_idx = index[..., None].expand(B, m, d)
        heavy = self.heavy(x.gather(1, gather_idx))  # (B, m, d)
        light = self.light(x)  # (B, n, d); under autocast both are bf16, the weights float32
        g = gate(weight, self.straight_through)
        return light.scatter_add(1, gather_idx, (heavy * g[..., None]).to(light.dtype))


class RoutedAttention(nn.Module):
    """CoLT5 conditional attention (section 3.2): light local attention (radius 127, 1/4 of the heads)
    on every token, plus heavy attention from m routed queries to 2m routed keys/values (3/4 of the
    heads); the key/value *inputs* are scaled by their routing weights, the heavy output by the
    query weights. Separate routers for queries and keys/values.

    Choices the paper leaves open, as flags (the models' defaults first):
    - `heavy_position_bias=True` (the presets; the constructor's default is False): a T5 relative
      bias (own table) over the original positions of the routed queries and keys, since every
      attention of LongT5, which CoLT5 builds on, has one; False gives the heavy branch no position
      signal (lucidrains adds rotary embeddings instead).
    - `router_input="normalized"`: the routers score the block's normalised input; "residual"
      scores the residual stream before the norm.
    - `straight_through=False`: outputs are multiplied by the routing scores; True multiplies by
      1 in the forward pass and keeps the scores' gradient (lucidrains' default)."""

    def __init__(
        self,
        d_model: int,
        n_heads_light: int,
        n_heads_heavy: int,
        head_dim: int,
        radius: int = LocalAttentionOptions.local_radius,
        routed: int | float = RoutedOptions.routed_tokens,
        kv_factor: float = RoutedOptions.kv_factor,
        bias: bool = False,
        scale: float | None = None,
        eps: float = RoutedOptions.router_eps,
        iters: int = RoutedOptions.router_iters,
        train_k_factor: float = RoutedOptions.router_train_k_factor,
        impl: str = "sdpa",
        heavy_position_bias: bool = RoutedOptions.heavy_position_bias,
        router_input: str = RoutedOptions.router_input,
        straight_through: bool = RoutedOptions.router_straight_through,
        relative_buckets: int = 32,
        relative_max_distance: int = 128,
        solver: str = RoutedOptions.router_solver,
    ):
        super().__init__()

        _check_router_options(router_input)
        self.router_input, self.straight_through = router_input, straight_through
        self.heavy_bias = (
            RelativePositionBias(n_heads_heavy, relative_buckets, relative_max_distance)
            if heavy_position_bias
            else None
        )

        self.light = LocalAttention(
            d_model, n_heads_light, radius, head_dim=head_dim, bias=bias, scale=scale, impl=impl
        )
        self.heavy = Attention(d_model, n_heads_heavy, head_dim=head_dim, bias=bias, scale=scale, impl=impl)
        self.router_q = Router(d_model, eps, iters, train_k_factor, solver)
        self.router_kv = Router(d_model, eps, iters, train_k_factor, solver)
        self.routed, self.kv_factor = routed, kv_factor

    def forward(self, x: torch.Tensor, ctx=None) -> torch.Tensor:
        """x (B, n, d) -> (B, n, d); ctx.key_padding_mask (B, n) if given."""
        B, n, d = x.shape
        mask = getattr(ctx, "key_padding_mask", None) if ctx is not None else None
        y = self.light(x, ctx, key_padding_mask=mask)  # (B, n, d); LongT5's local bias from the stack
        m = routed_count(n, self.routed)
        m_kv = min(n, int(round(self.kv_factor * m)))
        scored = router_input(x, ctx, self.router_input)
        qi, qw = self.router_q(scored, m, mask)  # (B, m)
        ki, kw = self.router_kv(scored, m_kv, mask)  # (B, m_kv)
        xq = x.gather(1, qi[..., None].expand(B, m, d))
        xkv = x.gather(1, ki[..., None].expand(B, m_kv, d)) * gate(kw, self.straight_through)[..., None].to(x.dtype)
        kv_mask = mask.bool().gather(1, ki) if mask is not None else None
        bias = self._heavy_bias(qi, ki, n) if self.heavy_bias is not None else None  # (B, H, m, m_kv)
        h = self.heavy(xq, xkv, key_padding_mask=kv_mask, attn_bias=bias)  # (B, m, d)
        g = gate(qw, self.straight_through)
        return y.scatter_add(1, qi[..., None].expand(B, m, d), (h * g[..., None]).to(y.dtype))

    def _heavy_bias(self, qi: torch.Tensor, ki: torch.Tensor, n: int) -> torch.Tensor:
        """T5 relative bias of the routed keys' positions minus the routed queries' positions."""
        rel = ki[:, None, :] - qi[:, :, None]  # (B, m, m_kv)
        return self.heavy_bias.by_offset(rel, n).permute(0, 3, 1, 2)  # (B, H, m, m_kv)
