"""A whole Llama decoder layer's decode step as one persistent Triton kernel (opt-in while it is
measured: `setup_cache(..., decode_layer="fused")`, `benchmarks/gqa_decode.py --alts fused-layer`).

Why. At batch 32 and context 1k a GQA-4 decode step of the 1B decoder is bound by reading 1.6 GB of
weights and 1.1 GB of cache, 0.63 ms at the copy bandwidth, yet it takes ~1.24 ms as ~100 kernels
(RESULTS.md `gqa-decode-analysis`): its 65 weight GEMMs each carry ~4 us of launch, ramp-up and tail,
and at 32 rows each of their ~130 thread blocks re-reads the whole input from L2, twice the bytes
of its weight slice for a 2048-wide projection (`benchmarks/decode_gemm.py`). The GQA paper's
speed-up (Sec. 2: fewer kv heads, a smaller cache to load) only shows once those fixed costs are
gone. This kernel runs a layer as one launch of one program per SM that walks the layer's phases,
separated by grid barriers:

  0  qkv = RMSNorm(x) Wqkv^T
  1  rotary on q and the new k, the new k / v into the cache at `slot`, attention over the cache
     (flash-decoding: a work item per (batch row, kv head[, cache split]), each kv head read once
     for its whole query group, as `nn.decode_attention`)
  2  (split caches only) the splits' partial results combined
  3  y = x + attn Wo^T
  4  u = silu(RMSNorm(y) Wgate^T) * (RMSNorm(y) Wup^T)
  5  y = y + u Wdown^T

GEMM phases split their work so that every program streams an equal slice of the weight once: the
output columns are cut into P / KS ranges and K into KS chunks (`split_plan`), one (range, chunk) per
program. KS > 1 cuts the input bytes each program reads from L2 by KS; the KS partial sums of a
range (float32, in a scratch buffer) are added in a fixed order by the range's last program to
arrive (a per-range counter), so results do not depend on timing. RMSNorm never needs a pass of
its own: the phase that writes the residual stream (3 and 5, and `norm_input` before the first
layer) also writes x' * w_norm for the next norm and its column ranges' sums of x'^2, and the norm's
GEMM scales its rows by rsqrt(mean(x'^2) + eps) after the product. (Folding the squares into the
GEMM's own loop instead kept Triton from pipelining its loads: 130 against 77 us per layer,
RESULTS.md `gqa-decode-analysis`.) After its loop each phase asks L2 for the first bytes of the
next phase's weights (or cache) while it finishes (`_prefetch_l2`; measured: no change).

Rounding follows the module path (`models.layers.PreNormLayer` with `nn.attention.Attention` and a
SwiGLU `nn.ffn.FeedForward`): every tensor the modules hand on in the model's dtype (q, k, v after
rotary, the attention output, gate, up, silu, the residual stream) is rounded to it here too; the
norm's weight is applied before the product and its scale in float32 after it. Masks: an additive
float32 (B, S) row per step (`attention_bias`: the model's key padding mask and causality by cache
slot, masked logits finfo.min as in `nn.attention.build_attention_mask`, so a row with every key
masked averages uniformly).

Grid barriers need every program resident at once: the grid is the SM count, one program per SM,
launched as a cooperative grid (CUDA refuses one that cannot be resident) and without programmatic
dependent launch, so each starts once the previous kernel has left the GPU. A barrier gives up after
BARRIER_SPINS polls and raises the error flag (`FusedLayerBuffers.check`, which `generate` calls)
instead of hanging. Under `TRITON_INTERPRET=1` (CPU tests), and with `persistent=False`, each phase
is its own launch of the same kernel and barriers are not needed.

Measured on an H200 (RESULTS.md `gqa-decode-compiled-fused-layer-fused-2cta`, `decode-layer`): the
step ties the default one (GQA-4 1.28 vs 1.24 ms at batch 32, context 1k; MHA 2.44 vs 2.03), each
of a layer's five dependent phases carrying ~3-5 us beyond streaming its bytes. Tried and removed,
both slower (RESULTS.md `decode-layer`): a program's attention items as one loop of tiles, and the
next GEMM's weight slice loaded into registers before each barrier (o then took 6.2 against 5.7 us
with its whole slice in registers: its time is the input rows and the split-K round trip).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from frugalformers.nn.decode_attention import sm_count, split_count, split_sizes
from frugalformers.nn.skinny_gemm import INTERPRET, runs_on, triton

if triton is not None:
    import triton.language as tl

    from frugalformers.nn.skinny_gemm import tile_dot

BLOCK_K = 128  # K per GEMM tile
BLOCK_S = 64  # cache positions per attention tile
MAX_ROWS = 64  # batch rows a step may have (the GEMM tiles hold every row)
MAX_BLOCK_N = 128  # output columns one program holds per weight
INPUT_SHARE = 0.6  # a GEMM phase splits K until each program's input bytes <= this share of its weight bytes
BARRIER_SPINS = 1 << 18  # polls before a grid barrier gives up (~0.3 s: a bug, not a slow GPU)
LAUNCH = {"num_warps": 8, "num_stages": 3}
PHASES = 6
PREFETCH_BYTES = 64 * 1024  # of the next phase's first bytes each program asks L2 for (PF), 8 MB in all
STAMPS = 16  # clock readings per program with `times` (start, then each phase's end and barrier exit)
FINFO_MIN = -3.4028234663852886e38  # torch.finfo(torch.float32).min: the masked logit


def column_block(n: int, ranges: int) -> int:
    """BLOCK_N that holds the widest of `ranges` column ranges of `n` columns (>= 16 for tl.dot)."""
    return max(16, 1 << (-(-n // ranges) - 1).bit_length())


def split_plan(n: int, n_acc: int, rows: int, programs: int, k: int, block_k: int = BLOCK_K) -> tuple[int, int]:
    """(KS, BLOCK_N) for a GEMM phase with `n` output columns per weight (`n_acc` weights, 2 for
    gate / up), `rows` input rows and K = `k` on `programs` programs: the smallest K split KS
    (dividing `programs`, <= 8, chunks of at least two BLOCK_K tiles) with which each program's
    input chunk (rows x K / KS) is at most INPUT_SHARE of its weight slice (its n KS / programs
    columns x K / KS x n_acc) and its columns fit MAX_BLOCK_N."""
    best = None
    for ks in range(1, 9):
        if programs % ks or (ks > 1 and k // ks < 2 * block_k):
            continue
        block_n = column_block(n, programs // ks)
        if block_n > MAX_BLOCK_N:
            continue
        best = (ks, block_n)
        if rows * programs <= INPUT_SHARE * n * n_acc * ks:  # x bytes per program vs weight bytes (masked rows: none)
            return best
    if best is None:
        raise ValueError(
            f"a GEMM of {n} columns does not split over {programs} programs in ranges of <= {MAX_BLOCK_N} columns"
        )
    return best


if triton is not None:
    STAMPS = tl.constexpr(STAMPS)
    PREFETCH_BYTES = tl.constexpr(PREFETCH_BYTES)

    @triton.jit
    def _grid_barrier(sync_ptr, err_ptr, target, SPINS: tl.constexpr):
        """Every program has arrived once `sync` reaches `target` (a count that only grows within a
        launch). The CTA's stores are ordered before the release by the thread barrier."""
        tl.debug_barrier()
        tl.atomic_add(sync_ptr, 1, sem="release", scope="gpu")
        seen = tl.atomic_add(sync_ptr, 0, sem="acquire", scope="gpu")
        spins = 0
        while (seen < target) & (spins < SPINS):
            seen = tl.atomic_add(sync_ptr, 0, sem="acquire", scope="gpu")
            spins += 1
        if seen < target:
            tl.atomic_xchg(err_ptr, 1)
        tl.debug_barrier()

    @triton.jit
    def _stamp(times_ptr, pid, slot, TIMES: tl.constexpr):
        """With TIMES, this program's GPU clock (ns, `%globaltimer`) at `slot` (benchmarks/decode_layer.py)."""
        if TIMES:
            now = tl.inline_asm_elementwise(
                "mov.u64 $0, %globaltimer;", "=l", [], dtype=tl.int64, is_pure=False, pack=1
            )
            tl.store(times_ptr + pid * STAMPS + slot, now)

    @triton.jit
    def _prefetch_l2(ptr, row_lo, row_hi, row_stride, col_lo, col_hi, ROWS: tl.constexpr, LINES: tl.constexpr):
        """Ask L2 for rows [row_lo, row_hi) x elements [col_lo, col_hi) of a row-major bf16 / fp16
        matrix, at most LINES 128-byte lines per row: the next phase's first bytes, fetched while
        this program waits for the others (no registers held, nothing returned)."""
        rr = row_lo + tl.arange(0, ROWS)
        cc = col_lo + tl.arange(0, LINES) * 64  # 64 two-byte elements per line
        ok = (rr[:, None] < row_hi) & (cc[None, :] < col_hi)
        addr = tl.where(ok, ptr + rr[:, None] * row_stride + cc[None, :], ptr)
        tl.inline_asm_elementwise(
            "prefetch.global.L2 [$1];\n\tmov.u32 $0, 0;", "=r,l", [addr], dtype=tl.int32, is_pure=False, pack=1
        )

    @triton.jit
    def _gemm_slice(pid, P, N, K, KS: tl.constexpr, BLOCK_K: tl.constexpr):
        """This program's column range r = [n_lo, n_hi) of P / KS ranges and K chunk [k_lo, k_hi) of KS."""
        R = P // KS
        r = pid // KS
        s = pid % KS
        kb = tl.cdiv(K, BLOCK_K)
        k_hi = tl.minimum(((s + 1) * kb // KS) * BLOCK_K, K)
        return r, r * N // R, (r + 1) * N // R, (s * kb // KS) * BLOCK_K, k_hi

    @triton.jit
    def _prefetch_gemm(
        pid, P, w_ptr, N, K, up_off,
        KS: tl.constexpr, TWO: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PF: tl.constexpr,
    ):  # fmt: skip
        """With PF, prefetch the start of this program's weight slice of a GEMM phase (~PREFETCH_BYTES)."""
        if PF:
            r, n_lo, n_hi, k_lo, k_hi = _gemm_slice(pid, P, N, K, KS, BLOCK_K)
            LINES: tl.constexpr = max(1, PREFETCH_BYTES // (BLOCK_N * 128 * (2 if TWO else 1)))
            _prefetch_l2(w_ptr, n_lo, n_hi, K, k_lo, k_hi, BLOCK_N, LINES)
            if TWO:
                _prefetch_l2(w_ptr, up_off + n_lo, up_off + n_hi, K, k_lo, k_hi, BLOCK_N, LINES)

    @triton.jit
    def _gemm_loop(
        pid, P, x_ptr, stride_x, M, K, w_ptr, N, up_off,
        KS: tl.constexpr, TWO: tl.constexpr, IEEE: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):  # fmt: skip
        """This program's partial products x W^T over its slice (`_gemm_slice`): (acc, acc2), float32
        (BLOCK_M, BLOCK_N); TWO: acc2 for the rows up_off + n (SwiGLU's up beside its gate)."""
        r, n_lo, n_hi, k_lo, k_hi = _gemm_slice(pid, P, N, K, KS, BLOCK_K)
        cols = n_lo + tl.arange(0, BLOCK_N)
        col_ok = cols < n_hi
        rows = tl.arange(0, BLOCK_M)
        row_ok = rows < M
        rk = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        acc2 = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        for k0 in range(k_lo, k_hi, BLOCK_K):  # a plain GEMM loop: the loads feed the dots only (pipelined)
            kk = k0 + rk
            k_ok = kk < k_hi
            xt = tl.load(
                x_ptr + rows[:, None] * stride_x + kk[None, :],
                mask=row_ok[:, None] & k_ok[None, :],
                other=0.0,
                cache_modifier=".cg",
            )  # (BLOCK_M, BLOCK_K): written by other programs, so read past L1
            wt = tl.load(
                w_ptr + cols[:, None] * K + kk[None, :],
                mask=col_ok[:, None] & k_ok[None, :],
                other=0.0,
                eviction_policy="evict_first",
            )  # (BLOCK_N, BLOCK_K): streamed once
            acc += tile_dot(xt, tl.trans(wt), IEEE)  # (BLOCK_M, BLOCK_N)
            if TWO:
                wt2 = tl.load(
                    w_ptr + (up_off + cols)[:, None] * K + kk[None, :],
                    mask=col_ok[:, None] & k_ok[None, :],
                    other=0.0,
                    eviction_policy="evict_first",
                )
                acc2 += tile_dot(xt, tl.trans(wt2), IEEE)
        return acc, acc2

    @triton.jit
    def _gemm_finish(
        acc, acc2, pid, P, M, K, N, ssq_ptr, n_ssq, eps, res_ptr, stride_res, y_ptr, stride_y,
        next_ln_ptr, yw_ptr, ssq_out_ptr, part_ptr, part_stride, sem_ptr, wdt: tl.constexpr,
        KS: tl.constexpr, NORM: tl.constexpr, TWO: tl.constexpr, EPI: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ):  # fmt: skip
        """The epilogue of y = x W^T. KS > 1: the range's KS partial sums (float32 scratch rows) are
        added in chunk order by its last program to arrive (a counter per range), which goes on.
        NORM: x was x' * w_norm and `ssq` (n_ssq, BLOCK_M) float32 holds partial sums of x'^2 per
        row, so y is scaled by rsqrt(mean(x'^2) + eps): RMSNorm(x') W^T. EPI 0: store y; 1: y = res
        + y (the residual; res and y may be the same), and for the next norm yw = y * next_ln and
        this column range's sums of y^2 in `ssq_out`; 2: y = silu(gate) * up."""
        r, n_lo, n_hi, k_lo, k_hi = _gemm_slice(pid, P, N, K, KS, BLOCK_K)
        cols = n_lo + tl.arange(0, BLOCK_N)
        col_ok = cols < n_hi
        rows = tl.arange(0, BLOCK_M)
        row_ok = rows < M
        ok = row_ok[:, None] & col_ok[None, :]
        if EPI == 1:  # issued before the partial sums' round trips (complete since the last barrier)
            res = tl.load(
                res_ptr + rows[:, None] * stride_res + cols[None, :], mask=ok, other=0.0, cache_modifier=".cg"
            )
            lw = tl.load(next_ln_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        tile = rows[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]  # (BLOCK_M, BLOCK_N) offsets
        done = True
        if KS > 1:  # partial sums into this program's scratch row: acc | acc2
            mine = part_ptr + pid * part_stride
            tl.store(mine + tile, acc)
            if TWO:
                tl.store(mine + BLOCK_M * BLOCK_N + tile, acc2)
            tl.debug_barrier()
            arrived = tl.atomic_add(sem_ptr + r, 1, sem="acq_rel", scope="gpu")
            done = arrived == KS - 1
            if done:  # the range's last program: the KS partials in chunk order, then the epilogue
                tl.atomic_xchg(sem_ptr + r, 0)  # every program of the range has arrived: reset for the next use
                acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
                acc2 = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
                for j in range(KS):
                    theirs = part_ptr + (r * KS + j) * part_stride
                    acc += tl.load(theirs + tile, cache_modifier=".cg")
                    if TWO:
                        acc2 += tl.load(theirs + BLOCK_M * BLOCK_N + tile, cache_modifier=".cg")
        if done:
            if NORM:  # the norm's statistics: the producer's per-range sums, added in range order
                ss = tl.zeros((BLOCK_M,), tl.float32)
                for c0 in range(0, n_ssq, 32):
                    chunk = c0 + tl.arange(0, 32)
                    part = tl.load(
                        ssq_ptr + chunk[:, None] * BLOCK_M + rows[None, :],
                        mask=(chunk < n_ssq)[:, None],
                        other=0.0,
                        cache_modifier=".cg",
                    )  # (32, BLOCK_M)
                    ss += tl.sum(part, 0)
                rs = 1.0 / tl.sqrt(ss / K + eps)
                acc = acc * rs[:, None]
                acc2 = acc2 * rs[:, None]
            y = acc.to(wdt)  # the projection's output in the model's dtype, as F.linear gives it
            if EPI == 1:
                y = (res.to(tl.float32) + y.to(tl.float32)).to(wdt)
                yf = tl.where(ok, y.to(tl.float32), 0.0)
                tl.store(ssq_out_ptr + r * BLOCK_M + rows, tl.sum(yf * yf, 1))  # this range's sums of y^2
                tl.store(yw_ptr + rows[:, None] * stride_y + cols[None, :], (yf * lw[None, :]).to(wdt), mask=ok)
            if EPI == 2:
                gate = y.to(tl.float32)
                act = (gate / (1.0 + tl.exp(-gate))).to(wdt)  # silu, rounded as the module's output
                y = (act.to(tl.float32) * acc2.to(wdt).to(tl.float32)).to(wdt)
            tl.store(y_ptr + rows[:, None] * stride_y + cols[None, :], y, mask=ok)

    @triton.jit
    def _attention_item(item, n_split, G, s_per_split, S):
        """(batch row, kv head, cache row offset / D, the split's first and end positions) of an item."""
        pair = item // n_split
        split = item % n_split
        lo = split * s_per_split
        return pair // G, pair % G, split, lo, tl.minimum(lo + s_per_split, S)

    @triton.jit
    def _prefetch_attention(pid, kc_ptr, vc_ptr, G, S, n_split, s_per_split, D: tl.constexpr, PF: tl.constexpr):
        """With PF, prefetch the first cache positions of this program's first attention item."""
        if PF:
            b, g, split, lo, hi = _attention_item(pid, n_split, G, s_per_split, S)
            ROWS: tl.constexpr = max(1, PREFETCH_BYTES // (2 * D * 2))  # K and V rows of D two-byte elements
            LINES: tl.constexpr = D * 2 // 128
            base = (b * G + g) * S * D
            _prefetch_l2(kc_ptr + base, lo, hi, D, 0, D, ROWS, LINES)
            _prefetch_l2(vc_ptr + base, lo, hi, D, 0, D, ROWS, LINES)

    @triton.jit
    def _attention_start(
        b, g, split, cache_row, bias_row, qkv_ptr, stride_qkv, kc_ptr, vc_ptr, pos_ptr, stride_pos, slot,
        cos_ptr, sin_ptr, G, r, scale, H: tl.constexpr, D: tl.constexpr, BLOCK_R: tl.constexpr,
    ):  # fmt: skip
        """An item's start (batch row b, kv head g, cache split: `_attention_item`; its cache row
        offset and bias row): rotary on the group's r query heads and the new key (positions[b]),
        the new k / v into the cache at `slot` (split 0), and the online softmax's state, holding
        the new key for split 0: (q, m, l, acc)."""
        rows = tl.arange(0, BLOCK_R)
        row_ok = rows < r
        d = tl.arange(0, D)
        d_rot = (d + D // 2) % D  # rotate_half: dim i pairs with i + D/2, the first half negated
        sign = tl.where(d < D // 2, -1.0, 1.0)
        dt = kc_ptr.dtype.element_ty
        pos = tl.load(pos_ptr + b * stride_pos)
        cos = tl.load(cos_ptr + pos * D + d)
        sin = tl.load(sin_ptr + pos * D + d)
        row = qkv_ptr + b * stride_qkv
        qh = (g * r + rows)[:, None] * D  # (BLOCK_R, 1) offsets of the group's query heads
        q = tl.load(row + qh + d[None, :], mask=row_ok[:, None], other=0.0, cache_modifier=".cg").to(tl.float32)
        q2 = tl.load(row + qh + d_rot[None, :], mask=row_ok[:, None], other=0.0, cache_modifier=".cg")
        q = (q * cos[None, :] + sign[None, :] * q2.to(tl.float32) * sin[None, :]).to(dt)  # (BLOCK_R, D)
        kn = tl.load(row + H * D + g * D + d, cache_modifier=".cg").to(tl.float32)
        kn2 = tl.load(row + H * D + g * D + d_rot, cache_modifier=".cg").to(tl.float32)
        kn = (kn * cos + sign * kn2 * sin).to(dt)  # (D,)
        vn = tl.load(row + (H + G) * D + g * D + d, cache_modifier=".cg")
        if split == 0:
            tl.store(kc_ptr + cache_row + slot * D + d, kn)
            tl.store(vc_ptr + cache_row + slot * D + d, vn)
        qk_new = tl.sum(q.to(tl.float32) * kn.to(tl.float32)[None, :], 1) * scale  # (BLOCK_R,)
        qk_new += tl.load(bias_row + slot)
        first = split == 0
        m_i = tl.where(first, qk_new, float("-inf"))
        l_i = tl.where(first, 1.0, 0.0) + tl.zeros((BLOCK_R,), tl.float32)
        acc = tl.where(first, vn.to(tl.float32)[None, :], 0.0) + tl.zeros((BLOCK_R, D), tl.float32)
        return q, m_i, l_i, acc

    @triton.jit
    def _attention_tile(
        q, m_i, l_i, acc, s0, hi, slot, kc_ptr, vc_ptr, cache_row, bias_row, scale,
        D: tl.constexpr, IEEE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr,
    ):  # fmt: skip
        """One cache tile [s0, s0 + BLOCK_S) of an item's online softmax: the new (m, l, acc)."""
        rows = tl.arange(0, BLOCK_R)
        d = tl.arange(0, D)
        s = s0 + tl.arange(0, BLOCK_S)
        s_in = (s < hi) & (s != slot)  # the slot's key is the new one, in registers
        k = tl.load(kc_ptr + cache_row + s[:, None] * D + d[None, :], mask=s_in[:, None], other=0.0)
        qk = tile_dot(q, tl.trans(k), IEEE) * scale  # (BLOCK_R, BLOCK_S)
        # the bias tile per query row (a broadcast row: 4-byte loads that pipeline with the cache's)
        qk += tl.load(bias_row + rows[:, None] * 0 + s[None, :], mask=s_in[None, :], other=0.0)
        qk = tl.where(s_in[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # a tile of nothing but the slot
        p = tl.exp(qk - m_use[:, None])
        alpha = tl.exp(m_i - m_use)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(vc_ptr + cache_row + s[:, None] * D + d[None, :], mask=s_in[:, None], other=0.0)
        acc = acc * alpha[:, None] + tile_dot(p.to(k.dtype), v, IEEE)
        return m_new, l_i, acc

    @triton.jit
    def _attention_end(
        item, b, g, m_i, l_i, acc, out_ptr, stride_out, apart_ptr, r,
        D: tl.constexpr, SPLIT: tl.constexpr, BLOCK_R: tl.constexpr,
    ):  # fmt: skip
        """An item's result: normalised into the output rows, or (SPLIT) its partials (items,
        BLOCK_R, D + 2): unnormalised output, max, sum."""
        rows = tl.arange(0, BLOCK_R)
        d = tl.arange(0, D)
        if SPLIT:
            part = apart_ptr + item * BLOCK_R * (D + 2) + rows[:, None] * (D + 2)
            tl.store(part + d[None, :], acc)
            tl.store(part + D, m_i[:, None])
            tl.store(part + D + 1, l_i[:, None])
        else:
            out = out_ptr + b * stride_out + (g * r + rows)[:, None] * D + d[None, :]
            tl.store(out, (acc / l_i[:, None]).to(out_ptr.dtype.element_ty), mask=(rows < r)[:, None])

    @triton.jit
    def _attention_phase(
        pid, P, qkv_ptr, stride_qkv, kc_ptr, vc_ptr, pos_ptr, stride_pos, slot_ptr, bias_ptr, stride_bias,
        cos_ptr, sin_ptr, out_ptr, stride_out, apart_ptr, B, S, G, r, n_split, s_per_split, scale,
        H: tl.constexpr, D: tl.constexpr, SPLIT: tl.constexpr, IEEE: tl.constexpr,
        BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr,
    ):  # fmt: skip
        """Work items (batch row b, kv head g, cache split) round robin over the programs
        (`_attention_start`, `_attention_tile`, `_attention_end`). `bias` (B, S) float32: the
        additive mask (0 or finfo.min; causality by slot included). (A program's items walked as one
        loop of tiles, so that the next item's first loads overlap the last one's end, was slower:
        MHA's phase 108.5 against 91.5 us, RESULTS.md `decode-layer`.)"""
        slot = tl.load(slot_ptr)
        for item in range(pid, B * G * n_split, P):
            b, g, split, lo, hi = _attention_item(item, n_split, G, s_per_split, S)
            cache_row = (b * G + g) * S * D
            bias_row = bias_ptr + b * stride_bias
            q, m_i, l_i, acc = _attention_start(
                b, g, split, cache_row, bias_row, qkv_ptr, stride_qkv, kc_ptr, vc_ptr, pos_ptr, stride_pos,
                slot, cos_ptr, sin_ptr, G, r, scale, H, D, BLOCK_R,
            )  # fmt: skip
            for s0 in range(lo, hi, BLOCK_S):
                m_i, l_i, acc = _attention_tile(q, m_i, l_i, acc, s0, hi, slot, kc_ptr, vc_ptr, cache_row,
                                                bias_row, scale, D, IEEE, BLOCK_R, BLOCK_S)  # fmt: skip
            _attention_end(item, b, g, m_i, l_i, acc, out_ptr, stride_out, apart_ptr, r, D, SPLIT, BLOCK_R)

    @triton.jit
    def _combine_phase(
        pid, P, apart_ptr, out_ptr, stride_out, B, G, r, n_split,
        D: tl.constexpr, BLOCK_R: tl.constexpr,
    ):  # fmt: skip
        """out = sum_s exp(m_s - M) acc_s / sum_s exp(m_s - M) l_s over a pair's splits, in order."""
        rows = tl.arange(0, BLOCK_R)
        d = tl.arange(0, D)
        dt = out_ptr.dtype.element_ty
        for pair in range(pid, B * G, P):
            b = pair // G
            g = pair % G
            base = apart_ptr + pair * n_split * BLOCK_R * (D + 2) + rows * (D + 2)
            m_all = tl.full((BLOCK_R,), float("-inf"), tl.float32)
            for s in range(n_split):
                m_all = tl.maximum(m_all, tl.load(base + s * BLOCK_R * (D + 2) + D, cache_modifier=".cg"))
            m_use = tl.where(m_all == float("-inf"), 0.0, m_all)
            acc = tl.zeros((BLOCK_R, D), tl.float32)
            den = tl.zeros((BLOCK_R,), tl.float32)
            for s in range(n_split):
                part = base + s * BLOCK_R * (D + 2)
                w = tl.exp(tl.load(part + D, cache_modifier=".cg") - m_use)
                den += w * tl.load(part + D + 1, cache_modifier=".cg")
                acc += w[:, None] * tl.load(part[:, None] + d[None, :], cache_modifier=".cg")
            out = out_ptr + b * stride_out + (g * r + rows)[:, None] * D + d[None, :]
            tl.store(out, (acc / den[:, None]).to(dt), mask=(rows < r)[:, None])

    @triton.jit
    def _decode_layer_kernel(
        x_ptr, xw_ptr, ssq_ptr, y_ptr, xw_out_ptr, ssq_out_ptr, next_ln_ptr, next_wqkv_ptr, ln2_ptr,
        wqkv_ptr, wo_ptr, wgu_ptr, wd_ptr, kc_ptr, vc_ptr,
        cos_ptr, sin_ptr, pos_ptr, slot_ptr, bias_ptr, qkv_ptr, attn_ptr, ffn_ptr,
        yw_ptr, ssq_mid_ptr, part_ptr, apart_ptr, sem_ptr, sync_ptr, err_ptr, times_ptr,
        n_ssq, B, S, G, r, F, n_split, s_per_split, part_stride, stride_bias, stride_pos, eps, scale,
        H: tl.constexpr, D: tl.constexpr, DM: tl.constexpr, PHASE: tl.constexpr,
        KS_QKV: tl.constexpr, BN_QKV: tl.constexpr, KS_O: tl.constexpr, BN_O: tl.constexpr,
        KS_GU: tl.constexpr, BN_GU: tl.constexpr, KS_DOWN: tl.constexpr, BN_DOWN: tl.constexpr,
        SPLIT: tl.constexpr, IEEE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr,
        BLOCK_K: tl.constexpr, BLOCK_S: tl.constexpr, SPINS: tl.constexpr, TIMES: tl.constexpr = False,
        PF: tl.constexpr = False,
    ):  # fmt: skip
        """One decode step of one layer, x (B, DM) in (with xw = x * w_norm1 and ssq its partial sums
        of x^2), y (B, DM) out (with xw_out = y * next_ln and ssq_out, the next norm's input);
        PHASE -1 runs every phase with grid barriers, k only phase k. PF: each phase, after its
        loop, prefetches the next phase's first bytes into L2 (the last one: the next layer's q/k/v
        weights at `next_wqkv`)."""
        pid = tl.program_id(0)
        P = tl.num_programs(0)
        ALL: tl.constexpr = PHASE < 0
        wdt: tl.constexpr = wqkv_ptr.dtype.element_ty
        n_qkv = (H + 2 * G) * D  # q columns, then k, then v
        _stamp(times_ptr, pid, 0, TIMES)  # slots: 0 start, 1 + 2k phase k's work done, 2 + 2k its barrier passed
        if ALL or PHASE == 0:
            acc, acc2 = _gemm_loop(pid, P, xw_ptr, DM, B, DM, wqkv_ptr, n_qkv, 0, KS_QKV, False, IEEE,
                                   BLOCK_M, BN_QKV, BLOCK_K)  # fmt: skip
            _prefetch_attention(pid, kc_ptr, vc_ptr, G, S, n_split, s_per_split, D, PF)
            _gemm_finish(acc, acc2, pid, P, B, DM, n_qkv, ssq_ptr, n_ssq, eps, x_ptr, 0, qkv_ptr, n_qkv,
                         ln2_ptr, yw_ptr, ssq_mid_ptr, part_ptr, part_stride, sem_ptr, wdt,
                         KS_QKV, True, False, 0, BLOCK_M, BN_QKV, BLOCK_K)  # fmt: skip
        _stamp(times_ptr, pid, 1, TIMES)
        if ALL:
            _grid_barrier(sync_ptr, err_ptr, P, SPINS)
        _stamp(times_ptr, pid, 2, TIMES)
        if ALL or PHASE == 1:
            _attention_phase(
                pid, P, qkv_ptr, n_qkv, kc_ptr, vc_ptr, pos_ptr, stride_pos, slot_ptr, bias_ptr, stride_bias, cos_ptr,
                sin_ptr, attn_ptr, H * D, apart_ptr, B, S, G, r, n_split, s_per_split, scale, H, D, SPLIT, IEEE,
                BLOCK_R, BLOCK_S,
            )  # fmt: skip
            _prefetch_gemm(pid, P, wo_ptr, DM, H * D, 0, KS_O, False, BN_O, BLOCK_K, PF)
        _stamp(times_ptr, pid, 3, TIMES)
        if ALL:
            _grid_barrier(sync_ptr, err_ptr, 2 * P, SPINS)
        _stamp(times_ptr, pid, 4, TIMES)
        if SPLIT and (ALL or PHASE == 2):
            _combine_phase(pid, P, apart_ptr, attn_ptr, H * D, B, G, r, n_split, D, BLOCK_R)
            _stamp(times_ptr, pid, 5, TIMES)
            if ALL:
                _grid_barrier(sync_ptr, err_ptr, 3 * P, SPINS)
            _stamp(times_ptr, pid, 6, TIMES)
        base: tl.constexpr = 3 if SPLIT else 2  # barriers passed so far
        if ALL or PHASE == 3:
            acc, acc2 = _gemm_loop(pid, P, attn_ptr, H * D, B, H * D, wo_ptr, DM, 0, KS_O, False, IEEE,
                                   BLOCK_M, BN_O, BLOCK_K)  # fmt: skip
            _prefetch_gemm(pid, P, wgu_ptr, F, DM, F, KS_GU, True, BN_GU, BLOCK_K, PF)
            _gemm_finish(acc, acc2, pid, P, B, H * D, DM, ssq_ptr, 0, eps, x_ptr, DM, y_ptr, DM,
                         ln2_ptr, yw_ptr, ssq_mid_ptr, part_ptr, part_stride, sem_ptr, wdt,
                         KS_O, False, False, 1, BLOCK_M, BN_O, BLOCK_K)  # fmt: skip
        _stamp(times_ptr, pid, 7, TIMES)
        if ALL:
            _grid_barrier(sync_ptr, err_ptr, (base + 1) * P, SPINS)
        _stamp(times_ptr, pid, 8, TIMES)
        if ALL or PHASE == 4:
            acc, acc2 = _gemm_loop(pid, P, yw_ptr, DM, B, DM, wgu_ptr, F, F, KS_GU, True, IEEE,
                                   BLOCK_M, BN_GU, BLOCK_K)  # fmt: skip
            _prefetch_gemm(pid, P, wd_ptr, DM, F, 0, KS_DOWN, False, BN_DOWN, BLOCK_K, PF)
            _gemm_finish(acc, acc2, pid, P, B, DM, F, ssq_mid_ptr, P // KS_O, eps, y_ptr, 0, ffn_ptr, F,
                         ln2_ptr, yw_ptr, ssq_mid_ptr, part_ptr, part_stride, sem_ptr, wdt,
                         KS_GU, True, True, 2, BLOCK_M, BN_GU, BLOCK_K)  # fmt: skip
        _stamp(times_ptr, pid, 9, TIMES)
        if ALL:
            _grid_barrier(sync_ptr, err_ptr, (base + 2) * P, SPINS)
        _stamp(times_ptr, pid, 10, TIMES)
        if ALL or PHASE == 5:
            acc, acc2 = _gemm_loop(pid, P, ffn_ptr, F, B, F, wd_ptr, DM, 0, KS_DOWN, False, IEEE,
                                   BLOCK_M, BN_DOWN, BLOCK_K)  # fmt: skip
            _prefetch_gemm(pid, P, next_wqkv_ptr, n_qkv, DM, 0, KS_QKV, False, BN_QKV, BLOCK_K, PF)
            _gemm_finish(acc, acc2, pid, P, B, F, DM, ssq_ptr, 0, eps, y_ptr, DM, y_ptr, DM,
                         next_ln_ptr, xw_out_ptr, ssq_out_ptr, part_ptr, part_stride, sem_ptr, wdt,
                         KS_DOWN, False, False, 1, BLOCK_M, BN_DOWN, BLOCK_K)  # fmt: skip
        _stamp(times_ptr, pid, 11, TIMES)
        if ALL:  # every program is past the last barrier: the last to leave resets the counter for the next launch
            tl.debug_barrier()
            left = tl.atomic_add(sync_ptr + 1, 1, sem="acq_rel", scope="gpu")
            if left == P - 1:
                tl.atomic_xchg(sync_ptr, 0)
                tl.atomic_xchg(sync_ptr + 1, 0)
        _stamp(times_ptr, pid, 12, TIMES)


@dataclass(frozen=True)
class LayerShape:
    """The sizes a fused decode layer is compiled for."""

    batch: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    max_len: int


@dataclass
class FusedLayerBuffers:
    """Scratch a fused decode step needs, made once per `setup_cache` (shapes fixed, so a CUDA graph
    can replay the step): the layer's intermediate activations, the split-K partials and counters,
    the barrier counters and the error flag."""

    shape: LayerShape
    programs: int
    plan: dict
    qkv: torch.Tensor
    attn: torch.Tensor
    ffn: torch.Tensor
    yw: torch.Tensor
    ssq_mid: torch.Tensor
    part: torch.Tensor
    apart: torch.Tensor
    sem: torch.Tensor
    sync: torch.Tensor
    err: torch.Tensor

    @classmethod
    def make(
        cls,
        shape: LayerShape,
        dtype: torch.dtype,
        device,
        programs: int | None = None,
        block_k: int = BLOCK_K,
        splits: dict | None = None,
        ctas_per_sm: int = 1,
    ) -> FusedLayerBuffers:
        """`programs` (default: `ctas_per_sm` per SM; 8 on CPU), `block_k` and `splits` ({"qkv" |
        "o" | "gu" | "down": KS, "attention": cache splits}) override the plan (tests, benchmarks)."""
        programs = programs or sm_count(device) * ctas_per_sm
        B, H, G, D, DM, F = shape.batch, shape.n_heads, shape.n_kv_heads, shape.head_dim, shape.d_model, shape.d_ff
        if B > MAX_ROWS:
            raise ValueError(f"batch={B} exceeds the fused decode layer's {MAX_ROWS} rows; decode in smaller batches")
        splits = splits or {}
        gemms = {"qkv": ((H + 2 * G) * D, 1, DM), "o": (DM, 1, H * D), "gu": (F, 2, DM), "down": (DM, 1, F)}
        plan = {}
        for name, (n, n_acc, k) in gemms.items():
            ks, block_n = split_plan(n, n_acc, B, programs, k, block_k)
            if name in splits:
                ks = splits[name]
                block_n = column_block(n, programs // ks)
            plan[name] = (ks, block_n)
        n_split = splits.get("attention") or split_count(B * G, shape.max_len, programs)
        n_split, s_per_split = split_sizes(shape.max_len, n_split, BLOCK_S)
        plan.update(n_split=n_split, s_per_split=s_per_split)
        block_m = max(16, triton.next_power_of_2(B))
        block_r = max(16, triton.next_power_of_2(H // G))
        plan.update(block_m=block_m, block_r=block_r)
        part_stride = 2 * block_m * max(bn for _, bn in (plan[k] for k in ("qkv", "o", "gu", "down")))
        plan.update(part_stride=part_stride, block_k=block_k)

        def empty(*size, dt=dtype):
            return torch.empty(*size, dtype=dt, device=device)

        return cls(
            shape=shape,
            programs=programs,
            plan=plan,
            qkv=empty(B, (H + 2 * G) * D),
            attn=empty(B, H * D),
            ffn=empty(B, F),
            yw=empty(B, DM),
            ssq_mid=empty(programs, block_m, dt=torch.float32),
            part=empty(programs, part_stride, dt=torch.float32),
            apart=empty(B * G * n_split if n_split > 1 else 1, block_r, D + 2, dt=torch.float32),
            sem=torch.zeros(programs, dtype=torch.int32, device=device),
            sync=torch.zeros(2, dtype=torch.int32, device=device),
            err=torch.zeros(1, dtype=torch.int32, device=device),
        )

    def check(self) -> None:
        """Raise if a grid barrier gave up (a program never arrived), which leaves the results wrong."""
        if int(self.err.item()):
            raise RuntimeError(
                "a grid barrier of the fused decode layer timed out: the programs were not all resident "
                "at once (another kernel holding SMs?); decode with setup_cache(decode_layer='modules')"
            )


def fused_layer_applies(x: torch.Tensor) -> bool:
    """Triton runs on x's device and no gradient is asked for (the kernel has no backward)."""
    return runs_on(x.device) and not (torch.is_grad_enabled() and x.requires_grad)


def norm_input(x: torch.Tensor, norm_weight: torch.Tensor, block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first layer's norm input: (x * w_norm in x's dtype, the row sums of x^2 (1, block_m)
    float32); later layers get both from the layer before (`launch_layer`'s `next_ln`)."""
    xf = x.float()
    xw = (xf * norm_weight.float()).to(x.dtype)
    ssq = torch.nn.functional.pad(xf.pow(2).sum(-1), (0, block_m - x.shape[0]))[None]  # (1, block_m)
    return xw, ssq


def attention_bias(mask: torch.Tensor | None, slot: torch.Tensor, batch: int, max_len: int) -> torch.Tensor:
    """The additive float32 mask (B, S) of a decode step at cache `slot` (1,): 0 where a row may see
    a key (`mask` (B, S) nonzero, or every key without one) at a slot <= `slot`, finfo.min elsewhere,
    as `nn.attention.build_attention_mask` makes it. Made once per step for every layer."""
    keep = torch.arange(max_len, device=slot.device)[None, :] <= slot  # (1, S): causality by slot
    if mask is not None:
        keep = keep & (mask != 0)
    return torch.zeros(batch, max_len, device=slot.device).masked_fill(~keep, FINFO_MIN)  # (B, S)


def launch_layer(
    x: torch.Tensor,
    xw: torch.Tensor,
    ssq: torch.Tensor,
    weights: tuple[torch.Tensor, ...] | list[torch.Tensor],
    next_ln: torch.Tensor,
    next_wqkv: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    positions: torch.Tensor,
    slot: torch.Tensor,
    bias: torch.Tensor,
    buffers: FusedLayerBuffers,
    eps: float,
    scale: float,
    persistent: bool = True,
    launch: dict | None = None,
    cooperative: bool = True,
    times: torch.Tensor | None = None,
    prefetch: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One decode step of one layer: x (B, d_model) -> (y, y * next_ln, row sums of y^2 per column
    range of the last GEMM), the new k / v written into the caches (B, G, S, D) at `slot` (1,).
    `xw`, `ssq`: x * w_norm1 and x's row sums of squares (`norm_input` for the first layer, the
    previous layer's outputs after it); `next_ln`: the next layer's first norm weight (the final
    norm's after the last layer); `next_wqkv`: the next layer's Wqkv (prefetched; any weight of
    at least Wqkv's size after the last layer). `weights`: (Wqkv (q rows, then k, then v), Wo, norm2,
    Wgate_up (gate rows, then up), Wdown), contiguous (norm1 reaches the kernel through `xw`).
    `positions` (B,) the rotary position of each row (or (1,): every row's), `cos` / `sin`
    (max_len, D) float32 tables; `bias` (B, S) float32, the step's additive mask (`attention_bias`).
    `persistent` False (and always under the interpreter): a launch per phase, no grid barriers.
    `launch`: num_warps / num_stages (default LAUNCH). `cooperative`: the persistent kernel is
    launched as a cooperative grid (CUDA then refuses a grid whose programs cannot all be resident,
    instead of the barriers waiting for them). `times` (programs, STAMPS) int64: each program's
    clock at the phase boundaries (benchmarks). `prefetch`: each phase asks L2 for the next one's
    first bytes (not under the interpreter, which has no inline PTX)."""
    wqkv, wo, ln2, wgu, wd = weights
    sh, plan = buffers.shape, buffers.plan
    B, DM = x.shape
    H, G, D = sh.n_heads, sh.n_kv_heads, sh.head_dim
    S = k_cache.shape[2]
    y, xw_out = torch.empty_like(x), torch.empty_like(x)
    ssq_out = torch.empty(buffers.programs // plan["down"][0], plan["block_m"], dtype=torch.float32, device=x.device)
    opts = {**LAUNCH, **(launch or {})}
    consts = dict(
        H=H, D=D, DM=DM,
        KS_QKV=plan["qkv"][0], BN_QKV=plan["qkv"][1], KS_O=plan["o"][0], BN_O=plan["o"][1],
        KS_GU=plan["gu"][0], BN_GU=plan["gu"][1], KS_DOWN=plan["down"][0], BN_DOWN=plan["down"][1],
        SPLIT=plan["n_split"] > 1, IEEE=x.dtype == torch.float32, BLOCK_M=plan["block_m"],
        BLOCK_R=plan["block_r"], BLOCK_K=plan["block_k"], BLOCK_S=BLOCK_S, SPINS=BARRIER_SPINS,
        TIMES=times is not None, PF=prefetch and not INTERPRET,
    )  # fmt: skip
    args = (
        x, xw, ssq, y, xw_out, ssq_out, next_ln, next_wqkv, ln2, wqkv, wo, wgu, wd, k_cache, v_cache, cos, sin,
        positions, slot, bias, buffers.qkv, buffers.attn, buffers.ffn, buffers.yw, buffers.ssq_mid, buffers.part,
        buffers.apart, buffers.sem, buffers.sync, buffers.err, times if times is not None else buffers.err,
        ssq.shape[0], B, S, G, H // G, sh.d_ff, plan["n_split"], plan["s_per_split"],
        plan["part_stride"], bias.stride(0), positions.stride(0) if positions.shape[0] > 1 else 0, eps, scale,
    )  # fmt: skip
    grid = (buffers.programs,)
    if persistent and not INTERPRET:
        coop = {"launch_cooperative_grid": True} if cooperative else {}
        _decode_layer_kernel[grid](*args, PHASE=-1, **consts, **opts, **coop)
        return y, xw_out, ssq_out
    for phase in range(PHASES):
        if phase == 2 and not consts["SPLIT"]:
            continue
        _decode_layer_kernel[grid](*args, PHASE=phase, **consts, **opts)
    return y, xw_out, ssq_out


_BUFFERS: dict[int, FusedLayerBuffers] = {}  # the op's scratch, by id: internal to the op, as a GEMM's workspace


def register_buffers(buffers: FusedLayerBuffers) -> int:
    """Keep `buffers` for `fused_decode_layer` calls that name the returned id."""
    _BUFFERS[id(buffers)] = buffers
    return id(buffers)


def release_buffers(key: int) -> None:
    _BUFFERS.pop(key, None)


@torch.library.custom_op("frugalformers::fused_decode_layer", mutates_args=("k_cache", "v_cache"))
def fused_decode_layer(
    x: torch.Tensor,
    xw: torch.Tensor,
    ssq: torch.Tensor,
    weights: list[torch.Tensor],
    next_ln: torch.Tensor,
    next_wqkv: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    positions: torch.Tensor,
    slot: torch.Tensor,
    bias: torch.Tensor,
    eps: float,
    scale: float,
    persistent: bool,
    cooperative: bool,
    num_warps: int,
    num_stages: int,
    prefetch: bool,
    buffers_key: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`launch_layer` as an op torch.compile calls as it is (inside a compiled, graph-captured step);
    `buffers_key` names the scratch (`register_buffers`)."""
    buffers = _BUFFERS[buffers_key]
    return launch_layer(
        x, xw, ssq, weights, next_ln, next_wqkv, k_cache, v_cache, cos, sin, positions, slot, bias, buffers, eps,
        scale, persistent, {"num_warps": num_warps, "num_stages": num_stages}, cooperative, prefetch=prefetch,
    )  # fmt: skip


@fused_decode_layer.register_fake
def _(x, xw, ssq, weights, next_ln, next_wqkv, k_cache, v_cache, cos, sin, positions, slot, bias, eps, scale, *options):
    buffers = _BUFFERS[options[-1]]
    rows = buffers.programs // buffers.plan["down"][0]
    return torch.empty_like(x), torch.empty_like(x), x.new_empty(rows, buffers.plan["block_m"], dtype=torch.float32)
