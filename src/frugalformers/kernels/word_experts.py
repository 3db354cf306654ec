"""The MoWE expert FFN as three Triton kernels that read the bank in place (no gathered copy of the
touched experts' weights), with an optional row-sparse weight gradient, and its routing on the GPU.

A batch of 32k tokens routes ~24k tokens to ~11k of 32K word experts, ~2 tokens each (Zipf). Per
routed token the layer does 2 x 2 x d x d_e FLOPs on 2 x d x d_e weights, so it is bound by the
bytes of the touched experts' weights, not by FLOPs (`benchmarks/mowe.py` has the counts). The
floor of a forward + backward is three passes over those weights: read them (forward), read them
again (input gradient), write their gradient. The grouped-GEMM path (`nn.grouped_experts`) adds a
gathered copy of the touched weights (read + write, forward) and, with a dense Parameter, a
bank-sized gradient (12.9 GB of float32 at 32K experts). Here:

- routing (`route_words`, no host sync): one kernel hashes each token's routing id to its expert
  and counts the tokens per expert, a stable sort orders the tokens by expert, one program writes
  the prefix sums (each expert's first row and first tile, its slot among the touched experts),
  and `searchsorted` maps every tile to its expert. The forward grid is an upper bound on the
  tiles (N / BLOCK_M + min(E, N)): the spare programs read the tile count and return. The counts
  reach the host through a copy started with the routing, read by the backward, which sizes the
  gradient with them (an H200 step: 3.65 ms with the host syncs of the routing before, 2.70-2.90
  ms now; RESULTS.md `mowe-analysis`);
- forward, one program per tile of <= BLOCK_M rows of one expert (the rows sorted by expert; a
  frequent word's expert gets several tiles, so no program is a straggler): x rows are gathered
  by token index straight from the layer input, pre = x W_in[e] (float32, saved), y = act(pre)
  W_out[e] is stored straight into the layer output at the token positions;
- input gradient, the same tiles: dpre = (dy W_out[e]^T) * act'(pre) (saved, float32), dx = dpre
  W_in[e]^T into the token positions; a tile that holds all its expert's rows (most: a word's
  few tokens) also writes that expert's weight gradient dW_in[e] = x_e^T dpre_e, dW_out[e] =
  act(pre_e)^T dy_e from the tiles it has loaded;
- weight gradient of the experts with several tiles, one program per (expert, block of d), over
  that expert's rows; every gradient is written once into a compact (U, ., .) stack of the
  touched experts only.

`WordExpertFFN` returns the weight gradient as a row-sparse COO tensor over the bank (indices =
the touched experts, values = the compact stack, no copy), as `nn.Embedding(sparse=True)` does,
when the bank asks for it (`WordExpertBank(sparse_grad=True)`; `train.row_sparse_adamw` updates
those rows lazily); otherwise as the dense gradient (the compact stack scattered into zeros).
Under `TRITON_INTERPRET=1` the kernels run on CPU tensors (tests, fp32).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from frugalformers.kernels.triton_support import runs_on, triton

if triton is not None:
    import triton.language as tl

    from frugalformers.kernels.triton_support import tile_dot

ACTIVATION_CODES = {"relu": 0, "gelu": 1, "gelu_new": 2, "silu": 3}
BLOCK_M = 16  # rows per tile: most experts see 1-2 tokens of a batch; tl.dot needs >= 16
BLOCK_D = 128  # columns of d per step (and per weight-gradient program)
# launch options per kernel (`benchmarks/mowe.py --sweep` times the input-gradient kernel's on the GPU)
LAUNCH = {"forward": {"num_warps": 4, "num_stages": 3}, "input_grad": {"num_warps": 4, "num_stages": 3}}


def fused_applies(x: torch.Tensor, w_in: torch.Tensor, activation: str) -> bool:
    """Triton runs on x's device, the activation has a kernel form, d_e is a power of two in
    16..256 (one register tile), and the weights are contiguous floating tensors."""
    d_e = w_in.shape[-1]
    return (
        runs_on(x.device)
        and activation in ACTIVATION_CODES
        and 16 <= d_e <= 256
        and d_e & (d_e - 1) == 0
        and w_in.is_contiguous()
        and x.dtype in (torch.bfloat16, torch.float16, torch.float32)
    )


if triton is not None:

    @triton.jit
    def _tanh(z):
        return 2.0 * tl.sigmoid(2.0 * z) - 1.0

    @triton.jit
    def _act(x, ACT: tl.constexpr):
        """relu / gelu (erf) / gelu_new (tanh form) / silu of float32 x."""
        if ACT == 0:
            return tl.maximum(x, 0.0)
        if ACT == 1:
            return 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))
        if ACT == 2:
            return 0.5 * x * (1.0 + _tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))
        return x * tl.sigmoid(x)

    @triton.jit
    def _act_grad(x, ACT: tl.constexpr):
        """d act / dx at float32 x."""
        if ACT == 0:
            return tl.where(x > 0, 1.0, 0.0)
        if ACT == 1:
            return 0.5 * (1.0 + tl.erf(x * 0.7071067811865476)) + x * tl.exp(-0.5 * x * x) * 0.3989422804014327
        if ACT == 2:
            t = _tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))
            return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 0.134145 * x * x)
        s = tl.sigmoid(x)
        return s * (1.0 + x * (1.0 - s))

    @triton.jit
    def _in(t, CAST: tl.constexpr):
        """An operand tile in the compute dtype (CAST 1: bf16, autocast on CUDA; 2: fp16; 0: as loaded)."""
        if CAST == 1:
            out = t.to(tl.bfloat16)
        elif CAST == 2:
            out = t.to(tl.float16)
        else:
            out = t
        return out

    @triton.jit
    def _route_kernel(ids_ptr, expert_ptr, counts_ptr, N, E, SKIP, BLOCK: tl.constexpr):
        """expert[i] = hash(ids[i]) % E for a routed token (id > SKIP), E (past the last) otherwise,
        and counts[e] += 1 for every routed token: `word_experts.expert_of` and `rows_per_expert`
        in one pass."""
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = i < N
        rid = tl.load(ids_ptr + i, mask=ok, other=0).to(tl.int64)
        routed = ok & (rid > SKIP)
        h = ((rid * 2654435761) & 0xFFFFFFFF) % E  # Knuth's multiplicative hash, as expert_of
        e = tl.where(routed, h, E).to(tl.int32)
        tl.store(expert_ptr + i, e, mask=ok)
        tl.atomic_add(counts_ptr + e, 1, mask=routed)

    @triton.jit
    def _prefix_kernel(
        counts_ptr, offs_ptr, tile_cum_ptr, slot_ptr, present_ptr, multi_ptr, totals_ptr, E,
        BLOCK_M: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        """One program over counts (E,) rows per expert: offs (E + 1,) each expert's first sorted
        row, tile_cum (E + 1,) its first tile (ceil(rows / BLOCK_M) tiles each), slot (E,) its
        place among the touched experts, present[slot] = e, multi (E,) the experts with more than
        one tile (in order), totals = [touched U, tiles, experts with several tiles]."""
        run_rows = tl.zeros((), tl.int32)
        run_tiles = tl.zeros((), tl.int32)
        run_u = tl.zeros((), tl.int32)
        run_m = tl.zeros((), tl.int32)
        for e0 in range(0, E, BLOCK):
            e = e0 + tl.arange(0, BLOCK)
            ok = e < E
            c = tl.load(counts_ptr + e, mask=ok, other=0)
            tiles = (c + BLOCK_M - 1) // BLOCK_M
            nz = (c > 0).to(tl.int32)
            tl.store(offs_ptr + e, run_rows + tl.cumsum(c, 0) - c, mask=ok)
            tl.store(tile_cum_ptr + e, run_tiles + tl.cumsum(tiles, 0) - tiles, mask=ok)
            slot = run_u + tl.cumsum(nz, 0) - nz
            tl.store(slot_ptr + e, slot, mask=ok)
            tl.store(present_ptr + slot, e, mask=ok & (c > 0))
            many = (c > BLOCK_M).to(tl.int32)
            tl.store(multi_ptr + run_m + tl.cumsum(many, 0) - many, e, mask=ok & (many > 0))
            run_m += tl.sum(many, 0)
            run_rows += tl.sum(c, 0)
            run_tiles += tl.sum(tiles, 0)
            run_u += tl.sum(nz, 0)
        tl.store(offs_ptr + E, run_rows)
        tl.store(tile_cum_ptr + E, run_tiles)
        tl.store(totals_ptr, run_u)
        tl.store(totals_ptr + 1, run_tiles)
        tl.store(totals_ptr + 2, run_m)

    @triton.jit
    def _tile_rows(tile_e_ptr, tile_cum_ptr, offs_ptr, slot_ptr, token_ptr, BLOCK_M: tl.constexpr):
        """This program's tile: its expert's slot u and id e, its rows (sorted order) and their token
        positions, and whether it is its expert's only tile."""
        t = tl.program_id(0)
        e = tl.load(tile_e_ptr + t).to(tl.int64)
        r_lo, r1 = tl.load(offs_ptr + e), tl.load(offs_ptr + e + 1)
        rows = r_lo + (t - tl.load(tile_cum_ptr + e)) * BLOCK_M + tl.arange(0, BLOCK_M)
        ok = rows < r1
        tok = tl.load(token_ptr + rows, mask=ok, other=0).to(tl.int64)
        u = tl.load(slot_ptr + e).to(tl.int64)
        return u, e, rows, ok, tok, r1 - r_lo <= BLOCK_M

    @triton.jit
    def _forward_kernel(
        x_ptr, w_in_ptr, w_out_ptr, y_ptr, pre_ptr, tile_e_ptr, tile_cum_ptr, offs_ptr, slot_ptr, token_ptr,
        totals_ptr, D,
        ACT: tl.constexpr, IEEE: tl.constexpr, CAST: tl.constexpr, DE: tl.constexpr, BLOCK_M: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):  # fmt: skip
        if tl.program_id(0) >= tl.load(totals_ptr + 1):  # past the last tile: the grid is an upper bound
            return
        _, e, rows, ok, tok, _ = _tile_rows(tile_e_ptr, tile_cum_ptr, offs_ptr, slot_ptr, token_ptr, BLOCK_M)
        de = tl.arange(0, DE)
        cols = tl.arange(0, BLOCK_D)
        pre = tl.zeros((BLOCK_M, DE), tl.float32)
        for k0 in range(0, D, BLOCK_D):  # pre = x W_in[e]
            kk = k0 + cols
            xt = tl.load(x_ptr + tok[:, None] * D + kk[None, :], mask=ok[:, None] & (kk < D)[None, :], other=0.0)
            wt = tl.load(w_in_ptr + (e * D + kk[:, None]) * DE + de[None, :], mask=(kk < D)[:, None], other=0.0)
            xt = _in(xt, CAST)
            pre += tile_dot(xt, wt.to(xt.dtype), IEEE)  # (BLOCK_M, DE)
        tl.store(pre_ptr + rows[:, None] * DE + de[None, :], pre, mask=ok[:, None])
        a = _in(_act(pre, ACT).to(x_ptr.dtype.element_ty), CAST)  # in the compute dtype
        for n0 in range(0, D, BLOCK_D):  # y = act(pre) W_out[e], into the token rows (in y's dtype)
            nn = n0 + cols
            wt = tl.load(w_out_ptr + (e * DE + de[:, None]) * D + nn[None, :], mask=(nn < D)[None, :], other=0.0)
            yt = tile_dot(a, wt.to(a.dtype), IEEE).to(a.dtype)  # (BLOCK_M, BLOCK_D), rounded as the compute dtype
            tl.store(y_ptr + tok[:, None] * D + nn[None, :], yt.to(y_ptr.dtype.element_ty),
                     mask=ok[:, None] & (nn < D)[None, :])  # fmt: skip

    @triton.jit
    def _input_grad_kernel(
        dy_ptr, x_ptr, w_in_ptr, w_out_ptr, pre_ptr, dpre_ptr, dx_ptr, g_in_ptr, g_out_ptr, tile_e_ptr, tile_cum_ptr,
        offs_ptr, slot_ptr, token_ptr, totals_ptr, D,
        ACT: tl.constexpr, IEEE: tl.constexpr, CAST: tl.constexpr, DE: tl.constexpr, BLOCK_M: tl.constexpr,
        BLOCK_D: tl.constexpr, WGRAD: tl.constexpr,
    ):  # fmt: skip
        """dx (and dpre) for a tile; with WGRAD, an expert's only tile (most experts: a word's few
        tokens) also writes the expert's weight gradient, from the dy / x tiles it loads anyway."""
        if tl.program_id(0) >= tl.load(totals_ptr + 1):  # past the last tile: the grid is an upper bound
            return
        u, e, rows, ok, tok, only = _tile_rows(tile_e_ptr, tile_cum_ptr, offs_ptr, slot_ptr, token_ptr, BLOCK_M)
        de = tl.arange(0, DE)
        cols = tl.arange(0, BLOCK_D)
        pre = tl.load(pre_ptr + rows[:, None] * DE + de[None, :], mask=ok[:, None], other=0.0)
        a = _in(tl.where(ok[:, None], _act(pre, ACT), 0.0).to(dy_ptr.dtype.element_ty), CAST)  # (BLOCK_M, DE)
        write_w = WGRAD and only
        da = tl.zeros((BLOCK_M, DE), tl.float32)
        for n0 in range(0, D, BLOCK_D):  # da = dy W_out[e]^T (and dW_out[e] = act(pre)^T dy)
            nn = n0 + cols
            dyt = tl.load(dy_ptr + tok[:, None] * D + nn[None, :], mask=ok[:, None] & (nn < D)[None, :], other=0.0)
            wt = tl.load(w_out_ptr + (e * DE + de[:, None]) * D + nn[None, :], mask=(nn < D)[None, :], other=0.0)
            dyt = _in(dyt, CAST)
            da += tile_dot(dyt, tl.trans(wt.to(dyt.dtype)), IEEE)  # (BLOCK_M, DE)
            if write_w:
                g_out = tile_dot(tl.trans(a), dyt, IEEE)  # (DE, BLOCK_D)
                tl.store(g_out_ptr + (u * DE + de[:, None]) * D + nn[None, :], g_out.to(g_out_ptr.dtype.element_ty),
                         mask=(nn < D)[None, :])  # fmt: skip
        dpre = da * _act_grad(pre, ACT)
        tl.store(dpre_ptr + rows[:, None] * DE + de[None, :], dpre, mask=ok[:, None])
        dp = _in(dpre.to(dy_ptr.dtype.element_ty), CAST)  # in the compute dtype
        for k0 in range(0, D, BLOCK_D):  # dx = dpre W_in[e]^T, into the token rows (and dW_in[e] = x^T dpre)
            kk = k0 + cols
            wt = tl.load(w_in_ptr + (e * D + kk[:, None]) * DE + de[None, :], mask=(kk < D)[:, None], other=0.0)
            dxt = tile_dot(dp, tl.trans(wt.to(dp.dtype)), IEEE).to(dp.dtype)  # (BLOCK_M, BLOCK_D)
            tl.store(dx_ptr + tok[:, None] * D + kk[None, :], dxt.to(dx_ptr.dtype.element_ty),
                     mask=ok[:, None] & (kk < D)[None, :])  # fmt: skip
            if write_w:
                xt = tl.load(x_ptr + tok[:, None] * D + kk[None, :], mask=ok[:, None] & (kk < D)[None, :], other=0.0)
                g_in = tile_dot(tl.trans(_in(xt, CAST)), dp, IEEE)  # (BLOCK_D, DE)
                tl.store(g_in_ptr + (u * D + kk[:, None]) * DE + de[None, :], g_in.to(g_in_ptr.dtype.element_ty),
                         mask=(kk < D)[:, None])  # fmt: skip

    @triton.jit
    def _weight_grad_kernel(
        x_ptr, dy_ptr, pre_ptr, dpre_ptr, g_in_ptr, g_out_ptr, offs_ptr, slot_ptr, multi_ptr, token_ptr, D,
        ACT: tl.constexpr, IEEE: tl.constexpr, CAST: tl.constexpr, DE: tl.constexpr, BLOCK_M: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):  # fmt: skip
        """dW of the experts with more than one tile (the others' comes from `_input_grad_kernel`): a
        program per (such expert, block of d)."""
        e = tl.load(multi_ptr + tl.program_id(0)).to(tl.int64)
        u = tl.load(slot_ptr + e).to(tl.int64)
        kk = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
        k_ok = kk < D
        de = tl.arange(0, DE)
        r0, r1 = tl.load(offs_ptr + e), tl.load(offs_ptr + e + 1)
        g_in = tl.zeros((BLOCK_D, DE), tl.float32)
        g_out = tl.zeros((DE, BLOCK_D), tl.float32)
        for m0 in range(r0, r1, BLOCK_M):  # over this expert's rows
            rows = m0 + tl.arange(0, BLOCK_M)
            ok = rows < r1
            tok = tl.load(token_ptr + rows, mask=ok, other=0).to(tl.int64)
            m2 = ok[:, None] & k_ok[None, :]
            xt = _in(tl.load(x_ptr + tok[:, None] * D + kk[None, :], mask=m2, other=0.0), CAST)  # fmt: skip
            dyt = _in(tl.load(dy_ptr + tok[:, None] * D + kk[None, :], mask=m2, other=0.0), CAST)
            dp = tl.load(dpre_ptr + rows[:, None] * DE + de[None, :], mask=ok[:, None], other=0.0)
            pre = tl.load(pre_ptr + rows[:, None] * DE + de[None, :], mask=ok[:, None], other=0.0)
            a = tl.where(ok[:, None], _act(pre, ACT), 0.0)
            g_in += tile_dot(tl.trans(xt), dp.to(xt.dtype), IEEE)  # (BLOCK_D, DE)
            g_out += tile_dot(tl.trans(a.to(dyt.dtype)), dyt, IEEE)  # (DE, BLOCK_D)
        tl.store(g_in_ptr + (u * D + kk[:, None]) * DE + de[None, :], g_in.to(g_in_ptr.dtype.element_ty),
                 mask=k_ok[:, None])  # fmt: skip
        tl.store(g_out_ptr + (u * DE + de[:, None]) * D + kk[None, :], g_out.to(g_out_ptr.dtype.element_ty),
                 mask=k_ok[None, :])  # fmt: skip


@dataclass
class Routing:
    """Where a batch's tokens go, all on the device, made without a host sync (`route_words`):

    token (N,) the token rows sorted by expert, the routed ones first (offs[E] of them); offs
    (E + 1,) each expert's first sorted row; tile_cum (E + 1,) its first tile of <= BLOCK_M rows;
    tile_e (max_tiles,) each tile's expert (E past the last tile); slot (E,) an expert's place
    among the touched experts and present (E,) the touched experts in that order (the first U are
    set); multi (E,) the experts with several tiles (the first M); totals (3,) [U, tiles, M].
    max_tiles bounds the tile count from the shapes alone, so the forward kernel's grid needs no
    host sync; `counts_on_host` reads the totals from a copy started when the routing was made
    (done long before the backward asks)."""

    token: torch.Tensor
    offs: torch.Tensor
    tile_cum: torch.Tensor
    tile_e: torch.Tensor
    slot: torch.Tensor
    present: torch.Tensor
    multi: torch.Tensor
    totals: torch.Tensor
    max_tiles: int
    _host: torch.Tensor
    _ready: object = None  # a CUDA event after the copy of totals to _host

    def counts_on_host(self) -> tuple[int, int, int]:
        """(touched experts U, tiles, experts with several tiles)."""
        if self._ready is not None:
            self._ready.synchronize()
        U, n_tiles, n_multi = self._host.tolist()
        return U, n_tiles, n_multi


def route_words(ids: torch.Tensor, n_experts: int, skip_top: int, block_m: int = BLOCK_M) -> Routing:
    """Routing ids (N,) -> the `Routing` of their tokens over n_experts experts: a token with id
    <= skip_top is not routed; the others go to `word_experts.expert_of(id, n_experts)`. Four
    kernels (hash and count, stable sort, prefix sums, tile map) and no host sync."""
    N, E = ids.numel(), n_experts
    dev = ids.device
    counts = torch.zeros(E, dtype=torch.int32, device=dev)  # (E,) routed tokens per expert
    expert = torch.empty(N, dtype=torch.int32, device=dev)
    if N:
        _route_kernel[(triton.cdiv(N, 1024),)](ids, expert, counts, N, E, skip_top, BLOCK=1024)
    token = torch.argsort(expert, stable=True)  # (N,) by expert, the skipped tokens (expert E) last
    buf = torch.empty(5 * E + 5, dtype=torch.int32, device=dev)  # one allocation, cut into the routing's arrays
    offs, tile_cum, slot, present, multi, totals = buf.split([E + 1, E + 1, E, E, E, 3])
    _prefix_kernel[(1,)](counts, offs, tile_cum, slot, present, multi, totals, E, BLOCK_M=block_m, BLOCK=4096,
                         num_warps=8)  # fmt: skip
    max_tiles = -(-N // block_m) + min(E, N)  # sum_e ceil(c_e / m) <= N / m + (touched experts)
    steps = torch.arange(max_tiles, dtype=torch.int32, device=dev)
    tile_e = torch.searchsorted(tile_cum[1:], steps, right=True, out_int32=True)  # (max_tiles,)
    if dev.type == "cuda":
        host = torch.empty(3, dtype=torch.int32, pin_memory=True)
        host.copy_(totals, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()
    else:
        host, ready = totals, None
    return Routing(token, offs, tile_cum, tile_e, slot, present, multi, totals, max_tiles, host, ready)


class WordExpertFFN(torch.autograd.Function):
    """y (N, d) = act(x[t] W_in[e_t]) W_out[e_t] at each routed token t (`routing`), 0 at the other
    rows of x (N, d); y, dx in x's dtype, the products in `compute` (float32 accumulation)."""

    @staticmethod
    def forward(ctx, x, w_in, w_out, routing: Routing, activation: str, sparse_grad: bool, compute: torch.dtype):
        N, D = x.shape
        DE = w_in.shape[-1]
        x = x.contiguous()
        y = torch.zeros_like(x)  # in x's dtype (the residual's): no cast pass over the layer's output
        pre = torch.empty(N, DE, dtype=torch.float32, device=x.device)  # (sorted rows, DE): the routed rows first
        cast = {torch.bfloat16: 1, torch.float16: 2}.get(compute, 0)
        meta = dict(ACT=ACTIVATION_CODES[activation], IEEE=compute == torch.float32, CAST=cast, DE=DE, BLOCK_M=BLOCK_M,
                    BLOCK_D=BLOCK_D)  # fmt: skip
        r = routing
        if r.max_tiles:
            _forward_kernel[(r.max_tiles,)](x, w_in, w_out, y, pre, r.tile_e, r.tile_cum, r.offs, r.slot, r.token,
                                            r.totals, D, **meta, **LAUNCH["forward"])  # fmt: skip
        ctx.save_for_backward(x, pre, w_in, w_out)
        ctx.routing, ctx.meta, ctx.sparse_grad = routing, meta, sparse_grad
        return y

    @staticmethod
    def backward(ctx, dy):
        x, pre, w_in, w_out = ctx.saved_tensors
        r, meta = ctx.routing, ctx.meta
        N, D = x.shape
        U, n_tiles, n_multi = r.counts_on_host()  # copied to the host in the forward: no wait here
        dy = dy.contiguous()  # cast tile by tile in the kernels
        dx = torch.zeros_like(x)
        dpre = torch.empty_like(pre)
        wgrad = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]  # a frozen bank skips its gradient
        shape = (U, 1, 1) if not wgrad else None
        g_in = torch.empty(shape or (U, *w_in.shape[1:]), dtype=w_in.dtype, device=x.device)
        g_out = torch.empty(shape or (U, *w_out.shape[1:]), dtype=w_out.dtype, device=x.device)
        if n_tiles:  # dx, dpre, and the weight gradient of the experts with one tile
            opts = {**meta, **LAUNCH["input_grad"]}  # (may set its own BLOCK_D)
            _input_grad_kernel[(n_tiles,)](dy, x, w_in, w_out, pre, dpre, dx, g_in, g_out, r.tile_e, r.tile_cum,
                                           r.offs, r.slot, r.token, r.totals, D, WGRAD=wgrad, **opts)  # fmt: skip
        gw_in = gw_out = None
        if wgrad:
            if n_multi:  # the experts with several tiles
                _weight_grad_kernel[(n_multi, triton.cdiv(D, BLOCK_D))](x, dy, pre, dpre, g_in, g_out, r.offs, r.slot,
                                                                       r.multi, r.token, D, **meta)  # fmt: skip
            present = r.present[:U]
            gw_in, gw_out = (_bank_grad(present, g, w, ctx.sparse_grad) for g, w in ((g_in, w_in), (g_out, w_out)))
        return dx if ctx.needs_input_grad[0] else None, gw_in, gw_out, None, None, None, None


def _bank_grad(present: torch.Tensor, values: torch.Tensor, weight: torch.Tensor, sparse: bool) -> torch.Tensor:
    """The gradient of a bank weight (E, ., .) from the touched experts' stack (U, ., .): row-sparse
    COO (no copy) or dense (scattered into zeros)."""
    idx = present.long()
    if sparse:
        return torch.sparse_coo_tensor(idx[None], values, weight.shape, is_coalesced=True, check_invariants=False)
    return torch.zeros_like(weight).index_copy_(0, idx, values)


def word_expert_ffn(
    x, w_in, w_out, routing: Routing, activation: str, sparse_grad: bool = False, compute: torch.dtype | None = None
) -> torch.Tensor:
    """x (N, d) and the `Routing` of its rows (`route_words`) -> (N, d) in x's dtype. `compute`:
    the dtype of the products' operands (default x's; bf16 under autocast), x, the weights and the
    incoming gradient are cast to it tile by tile inside the kernels."""
    compute = compute or x.dtype
    return WordExpertFFN.apply(x, w_in, w_out, routing, activation, sparse_grad, compute)
