"""Grouped-query decode attention as one Triton kernel (flash-decoding): each kv head is read once
for its whole query group, in one pass over the cache (`setup_cache`'s default on CUDA for layer
caches of 16 MB or more, `grouped_decode="auto"`; `benchmarks/decode_attention.py` times it alone,
`benchmarks/gqa_decode.py --alts triton-attn` in the step).

A decode step attends a few new query positions (T, at most 4) of H heads to a cache of S
positions of G kv heads. Its floor is reading the cache once: 2 B G S D bytes (GQA paper, Sec. 2:
the speed-up of fewer kv heads is the smaller cache to load). The matmul path of
`nn.attention.grouped_decode_attention` reads K, writes and reads (B, H, T, S) float32 scores,
then reads V, in three kernels; on an H200 at batch 32, context 1k it took 0.47 ms for GQA-4's
1.07 GB cache (0.25 ms at the copy bandwidth; RESULTS.md `gqa-decode-profile-compiled`), this
kernel 0.33 ms (77% of the bandwidth; MHA 97%; RESULTS.md `decode-attention`).

The kernel: one program per (batch row, kv head, split of the cache). Its rows are the r*T query
rows of the group (r = H / G; row i is head g*r + i // T at position i % T), padded to 16 for
`tl.dot`. It walks its split of the cache in BLOCK_S tiles with an online softmax (running max and
sum in float32, FlashAttention's recurrence), adds the additive mask tile of each query row, and
accumulates P V in float32. When the batch has too few (row, kv head) pairs to fill the GPU (MQA),
the cache is split into parts whose partial results (unnormalised output, max, sum) a second small
kernel combines: out = sum_s exp(m_s - M) acc_s / sum_s exp(m_s - M) l_s (`split_count`).

Masks follow `build_attention_mask`: additive float32 logits (B|1, H|1, T, S), masked entries
finfo.min, so a row whose keys are all masked averages uniformly, as the reference does. Under
`TRITON_INTERPRET=1` the kernels run on CPU tensors (tests, fp32 / fp16).
"""

from __future__ import annotations

from typing import Optional

import torch

from frugalformers.kernels.triton_support import runs_on, triton

if triton is not None:
    import triton.language as tl

    from frugalformers.kernels.triton_support import tile_dot

MAX_QUERY_ROWS = 4  # query positions per step this kernel takes (decoding: 1, speculative: a few)
BLOCK_S = 64  # cache positions per tile
MIN_SPLIT = 256  # cache positions per split at least (a split shorter than this stops paying for its combine)


def decode_attention_applies(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Triton runs on q's device, a decode step (T <= MAX_QUERY_ROWS), grouped kv heads, a head
    dim the kernel tiles (power of two, 16..256), matching floating dtypes, no gradient asked for."""
    D = q.shape[-1]
    return (
        runs_on(q.device)
        and not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad))
        and q.shape[2] <= MAX_QUERY_ROWS
        and q.shape[1] % k.shape[1] == 0
        and 16 <= D <= 256
        and D & (D - 1) == 0
        and q.dtype == k.dtype
        and q.dtype in (torch.bfloat16, torch.float16, torch.float32)
    )


# launch options of the attention kernel (`benchmarks/decode_attention.py` sweeps them on the GPU)
LAUNCH = {"BLOCK_S": BLOCK_S, "num_warps": 4, "num_stages": 3}


def sm_count(device: torch.device) -> int:
    """The programs that fill the GPU at one per SM: the SM count on CUDA, 8 elsewhere (the
    interpreter's tests)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 8


def split_count(pairs: int, S: int, programs: int) -> int:
    """Cache splits per (batch row, kv head): only when the pairs alone leave programs idle, as many
    as give each of `programs` (one per SM, `sm_count`) about one item (and each split at least
    MIN_SPLIT positions). Measured on an H200 at batch 32 (`benchmarks/decode_attention.py`,
    RESULTS.md `decode-attention`): a split and its combine cost more than they gain once the pairs
    fill the SMs (GQA-4's 128 pairs: 20.5 us per layer unsplit, 26.8 us in 3 splits); MQA's 32 pairs
    are fastest in 4."""
    return max(1, min(programs // pairs, S // MIN_SPLIT))


def split_sizes(S: int, n_split: int, block_s: int) -> tuple[int, int]:
    """(splits, positions per split) for `n_split` splits of S cache positions: whole tiles of
    `block_s` per split, every split non-empty (so there may be fewer than asked)."""
    per_split = -(-S // n_split)
    s_per_split = -(-per_split // block_s) * block_s  # whole tiles
    return -(-S // s_per_split), s_per_split


if triton is not None:

    @triton.jit
    def _decode_attention_kernel(
        q_ptr, k_ptr, v_ptr, mask_ptr, out_ptr, part_ptr, stats_ptr,
        S, T, R, r, G, s_per_split, n_split, scale,
        sqb, sqh, sqt, skb, skg, sks, svb, svg, svs, smb, smh, smt, sms, sob, soh, sot,
        HAS_MASK: tl.constexpr, SPLIT: tl.constexpr, IEEE: tl.constexpr,
        BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr, D: tl.constexpr,
    ):  # fmt: skip
        pair, split = tl.program_id(0), tl.program_id(1)
        b, g = pair // G, pair % G
        rows = tl.arange(0, BLOCK_R)
        row_ok = rows < R
        h, t = g * r + rows // T, rows % T  # (BLOCK_R,) query head and position of each row
        d = tl.arange(0, D)
        q = tl.load(q_ptr + b * sqb + h[:, None] * sqh + t[:, None] * sqt + d[None, :], mask=row_ok[:, None], other=0.0)
        m_i = tl.full((BLOCK_R,), float("-inf"), tl.float32)
        l_i = tl.zeros((BLOCK_R,), tl.float32)
        acc = tl.zeros((BLOCK_R, D), tl.float32)
        lo = split * s_per_split
        hi = tl.minimum(lo + s_per_split, S)
        for s0 in range(lo, hi, BLOCK_S):
            s = s0 + tl.arange(0, BLOCK_S)
            s_ok = s < hi
            k = tl.load(k_ptr + b * skb + g * skg + s[:, None] * sks + d[None, :], mask=s_ok[:, None], other=0.0)
            qk = tile_dot(q, tl.trans(k), IEEE) * scale  # (BLOCK_R, BLOCK_S)
            if HAS_MASK:
                m_off = b * smb + h[:, None] * smh + t[:, None] * smt + s[None, :] * sms
                qk += tl.load(mask_ptr + m_off, mask=row_ok[:, None] & s_ok[None, :], other=0.0)
            qk = tl.where(s_ok[None, :], qk, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 1))  # finite: every tile has a position in range
            p = tl.exp(qk - m_new[:, None])
            alpha = tl.exp(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(v_ptr + b * svb + g * svg + s[:, None] * svs + d[None, :], mask=s_ok[:, None], other=0.0)
            acc = acc * alpha[:, None] + tile_dot(p.to(v.dtype), v, IEEE)  # (IEEE: v is float32, p stays so)
            m_i = m_new
        if SPLIT:  # this split's partial results, float32: (pairs, n_split, BLOCK_R, D), (pairs, n_split, 2, BLOCK_R)
            base = pair * n_split + split
            tl.store(part_ptr + base * BLOCK_R * D + rows[:, None] * D + d[None, :], acc)
            tl.store(stats_ptr + base * 2 * BLOCK_R + rows, m_i)
            tl.store(stats_ptr + base * 2 * BLOCK_R + BLOCK_R + rows, l_i)
        else:
            out = acc / l_i[:, None]
            o_off = b * sob + h[:, None] * soh + t[:, None] * sot + d[None, :]
            tl.store(out_ptr + o_off, out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None])

    @triton.jit
    def _combine_kernel(
        part_ptr, stats_ptr, out_ptr, T, R, r, G, n_split, sob, soh, sot,
        BLOCK_R: tl.constexpr, D: tl.constexpr, SPLITS: tl.constexpr,
    ):  # fmt: skip
        pair = tl.program_id(0)
        b, g = pair // G, pair % G
        rows = tl.arange(0, BLOCK_R)
        sp = tl.arange(0, SPLITS)
        sp_ok = sp < n_split
        d = tl.arange(0, D)
        st = stats_ptr + (pair * n_split + sp[:, None]) * 2 * BLOCK_R + rows[None, :]  # (SPLITS, BLOCK_R)
        m = tl.load(st, mask=sp_ok[:, None], other=float("-inf"))
        l = tl.load(st + BLOCK_R, mask=sp_ok[:, None], other=0.0)
        m_all = tl.max(m, 0)  # (BLOCK_R,)
        w = tl.where(sp_ok[:, None], tl.exp(m - m_all[None, :]), 0.0)  # (SPLITS, BLOCK_R)
        denom = tl.sum(w * l, 0)
        acc = tl.zeros((BLOCK_R, D), tl.float32)
        for s in range(0, n_split):
            w_s = tl.sum(tl.where(sp[:, None] == s, w, 0.0), 0)  # (BLOCK_R,) this split's weight
            part = tl.load(part_ptr + ((pair * n_split + s) * BLOCK_R + rows[:, None]) * D + d[None, :])
            acc += part * w_s[:, None]
        h, t = g * r + rows // T, rows % T
        o_off = b * sob + h[:, None] * soh + t[:, None] * sot + d[None, :]
        tl.store(out_ptr + o_off, (acc / denom[:, None]).to(out_ptr.dtype.element_ty), mask=(rows < R)[:, None])


def _launch(q, k, v, mask, scale: float, n_split: int | None = None, launch: dict | None = None):
    """q (B, H, T, D), k / v (B, G, S, D) with unit stride over D, additive float mask broadcastable
    to (B, H, T, S) or None -> (B, H, T, D) in q's dtype. `launch`: BLOCK_S / num_warps / num_stages
    of the attention kernel (default LAUNCH)."""
    opts = {**LAUNCH, **(launch or {})}
    block_s = opts.pop("BLOCK_S")
    B, H, T, D = q.shape
    G, S = k.shape[1], k.shape[2]
    r = H // G
    R = r * T
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    out = torch.empty(B, H, T, D, dtype=q.dtype, device=q.device)
    block_r = max(16, triton.next_power_of_2(R))  # tl.dot needs >= 16 rows
    n_split, s_per_split = split_sizes(S, n_split or split_count(B * G, S, sm_count(q.device)), block_s)
    split = n_split > 1
    if mask is not None:
        mask = mask.float().expand(B, H, T, S)  # a view: broadcast dims get stride 0
        m_strides = mask.stride()
    else:
        m_strides = (0, 0, 0, 0)
    part = stats = out  # unused unless split
    if split:
        part = torch.empty(B * G, n_split, block_r, D, dtype=torch.float32, device=q.device)
        stats = torch.empty(B * G, n_split, 2, block_r, dtype=torch.float32, device=q.device)
    _decode_attention_kernel[(B * G, n_split)](
        q, k, v, mask if mask is not None else q, out, part, stats,
        S, T, R, r, G, s_per_split, n_split, scale,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), *m_strides, out.stride(0), out.stride(1), out.stride(2),
        HAS_MASK=mask is not None, SPLIT=split, IEEE=q.dtype == torch.float32,
        BLOCK_R=block_r, BLOCK_S=block_s, D=D, **opts,
    )  # fmt: skip
    if split:
        _combine_kernel[(B * G,)](
            part, stats, out, T, R, r, G, n_split, out.stride(0), out.stride(1), out.stride(2),
            BLOCK_R=block_r, D=D, SPLITS=triton.next_power_of_2(n_split), num_warps=4,
        )  # fmt: skip
    return out


@torch.library.custom_op("frugalformers::decode_attention", mutates_args=())
def _decode_attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: Optional[torch.Tensor],  # noqa: UP045 - the schema inference of older torch reads typing.Optional
    scale: float,
) -> torch.Tensor:
    """An opaque op for torch.compile (Inductor calls it as it is, inside the compiled step)."""
    return _launch(q, k, v, mask, scale)


@_decode_attention_op.register_fake
def _(q, k, v, mask, scale):
    return q.new_empty(q.shape)


def decode_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    n_split: int | None = None,
    launch: dict | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v for q (B, H, T, D) against a cache k / v (B, G, S, D), query
    head h reading kv head h // (H / G), by the Triton kernel. `n_split` fixes the cache splits
    and `launch` the kernel's options (tests, the sweep); default: enough programs for the GPU and
    LAUNCH. Callers check `decode_attention_applies`."""
    if n_split is not None or launch is not None:
        return _launch(q, k, v, mask, scale, n_split, launch)
    return _decode_attention_op(q, k, v, mask, float(scale))
