"""Stacked experts as one grouped GEMM (`torch._grouped_mm`) over rows sorted by expert: the fast
path shared by the MoE layer (dropless routing) and the MoWE bank.

Groups are made for the experts that have rows only: there is nothing to compute for the others,
and the backward of a grouped GEMM with an empty group fails (seen with torch 2.13's CPU kernel).
"""

from __future__ import annotations

import torch


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


def grouped_expert_ffn(
    h: torch.Tensor,
    counts: torch.Tensor,
    w_in: torch.Tensor,
    w_out: torch.Tensor,
    act,
    b_in: torch.Tensor | None = None,
    b_out: torch.Tensor | None = None,
) -> torch.Tensor:
    """h (P, d) sorted by expert, counts (E,) rows per expert -> act(h W_in[e] + b_in[e]) W_out[e]
    + b_out[e] for each row's expert e, (P, d). w_in (E, d, d_ff), w_out (E, d_ff, d), biases
    (E, d_ff) / (E, d). The weights are cast to h's dtype: only the experts with rows are gathered
    (the stacks as they are, one pass, when every expert has rows)."""
    present = counts.nonzero().squeeze(-1)  # (U,) the experts with rows, in order
    offs = counts.index_select(0, present).cumsum(0).to(torch.int32)  # (U,) end row of each group

    def weights(w: torch.Tensor) -> torch.Tensor:  # (U, ., .) in h's dtype
        return w.to(h.dtype) if present.numel() == counts.numel() else w.index_select(0, present).to(h.dtype)

    a = torch._grouped_mm(h, weights(w_in), offs=offs)  # (P, d_ff)
    if b_in is not None:
        a = a + b_in.to(a.dtype).repeat_interleave(counts, 0)
    out = torch._grouped_mm(act(a), weights(w_out), offs=offs)  # (P, d)
    if b_out is not None:
        out = out + b_out.to(out.dtype).repeat_interleave(counts, 0)
    return out
