"""Stacked experts as one grouped GEMM (`torch._grouped_mm`) over rows sorted by expert: the fast
path shared by the MoE layer (dropless routing) and the MoWE bank.

Groups are made for the experts that have rows only: there is nothing to compute for the others,
and the backward of a grouped GEMM with an empty group fails (seen with torch 2.13's CPU kernel).
The CUDA kernel refuses 1024 groups in one call ("Can't process more than 1024 groups", torch 2.11
on an H200, hit by a 32K-expert MoWE bank touching ~11K experts): more present experts run as
several calls of MAX_GROUPS over consecutive pieces of the gathered weights and rows.
"""

from __future__ import annotations

import torch

MAX_GROUPS = 512  # groups per torch._grouped_mm call: 512 ran on the H200, 1024 was refused


def grouped_mm_applies(h: torch.Tensor, w: torch.Tensor) -> bool:
    """torch._grouped_mm needs CUDA (SM90+ here), bf16 rows and 16-byte aligned strides (a
    misaligned stride gives wrong results, not an error)."""
    return (
        hasattr(torch, "_grouped_mm")
        and h.is_cuda
        and h.dtype == torch.bfloat16
        and torch.cuda.get_device_capability(h.device)[0] >= 9
        and h.shape[1] % 8 == 0
        and w.shape[-1] % 8 == 0
    )


def _chunked_grouped_mm(x: torch.Tensor, w: torch.Tensor, rows: torch.Tensor, chunks) -> torch.Tensor:
    """x (P, k) sorted by group, w (U, k, m), rows (U,) rows per group -> (P, m). `chunks` is None
    (one call) or (groups per call, rows per call): x and w are split (one cat in their backward,
    not a zero-filled copy of the whole tensor per piece, as slicing would give)."""
    if chunks is None:
        return torch._grouped_mm(x, w, offs=rows.cumsum(0).to(torch.int32))
    groups, row_counts = chunks
    parts = zip(x.split(row_counts), w.split(groups), rows.split(groups))
    return torch.cat([torch._grouped_mm(xc, wc, offs=rc.cumsum(0).to(torch.int32)) for xc, wc, rc in parts])


def grouped_expert_ffn(
    h: torch.Tensor,
    counts: torch.Tensor,
    w_in: torch.Tensor,
    w_out: torch.Tensor,
    act,
    b_in: torch.Tensor | None = None,
    b_out: torch.Tensor | None = None,
    gather=None,
) -> torch.Tensor:
    """h (P, d) sorted by expert, counts (E,) rows per expert -> act(h W_in[e] + b_in[e]) W_out[e]
    + b_out[e] for each row's expert e, (P, d). w_in (E, d, d_ff), w_out (E, d_ff, d), biases
    (E, d_ff) / (E, d). The weights are cast to h's dtype: only the experts with rows are gathered,
    once (the stacks as they are, one pass, when every expert has rows); more than MAX_GROUPS of
    them run as several grouped GEMMs over consecutive pieces of the gathered stack. `gather(w,
    experts)` takes the rows (default `index_select`; the MoWE bank's gives row-sparse gradients)."""
    present = counts.nonzero().squeeze(-1)  # (U,) the experts with rows, in order
    rows = counts.index_select(0, present)  # (U,) rows per group
    chunks = None
    if present.numel() > MAX_GROUPS:
        groups = [min(MAX_GROUPS, present.numel() - k) for k in range(0, present.numel(), MAX_GROUPS)]
        row_counts = torch.stack([r.sum() for r in rows.split(groups)]).tolist()  # one host sync
        chunks = (groups, row_counts)

    take = gather or (lambda w, idx: w.index_select(0, idx))

    def weights(w: torch.Tensor) -> torch.Tensor:  # (U, ., .) in h's dtype
        return w.to(h.dtype) if present.numel() == counts.numel() else take(w, present).to(h.dtype)

    a = _chunked_grouped_mm(h, weights(w_in), rows, chunks)  # (P, d_ff)
    if b_in is not None:
        a = a + b_in.to(a.dtype).repeat_interleave(counts, 0)
    out = _chunked_grouped_mm(act(a), weights(w_out), rows, chunks)  # (P, d)
    if b_out is not None:
        out = out + b_out.to(out.dtype).repeat_interleave(counts, 0)
    return out
