"""The lazy AdamW update of `train.row_sparse_adamw` for a row-sparse gradient as one Triton kernel.

A MoWE-Base step touches a few thousand of the bank's 32K experts, ~100K parameters each. The
torch update (`RowSparseAdamW._lazy_update`) coalesces the COO gradient (the bank's four layers
each add their own rows), casts it to float32, gathers the touched rows of the two moments and the
float32 master weights, updates them in ~10 elementwise kernels and scatters them back: ~15
passes over the touched rows. Measured on an H200 (RESULTS.md `mowe-model-profile`): the gathers,
scatters, casts and elementwise kernels MoWE-Base adds to T5-Base's step are ~25 ms of its 85 ms
of kernels. Here one program per (touched row, block of the row) sums the row's gradient pieces
in float32, reads its moments and master weights in place, and writes them and the parameter's
low-precision copy back: per parameter of a touched row, 2 bytes of gradient per piece, 12 read,
12 written, 2 for the copy.

The update is AdamW's (decoupled weight decay, bias correction from the parameter's own step
count), as `_lazy_update` computes it; under `TRITON_INTERPRET=1` the kernel runs on CPU tensors
(tests).
"""

from __future__ import annotations

import math

import torch

from frugalformers.kernels.triton_support import runs_on, triton

if triton is not None:
    import triton.language as tl

BLOCK = 1024  # parameters of a row per program


def lazy_kernel_applies(p: torch.Tensor, grad: torch.Tensor) -> bool:
    """Triton runs on the parameter's device and the gradient is row-sparse COO over dim 0."""
    return runs_on(p.device) and grad.is_sparse and grad.sparse_dim() == 1 and p.is_contiguous()


if triton is not None:

    @triton.jit
    def _lazy_adamw_kernel(
        values_ptr, order_ptr, rows_ptr, starts_ptr, counts_ptr, m_ptr, v_ptr, w_ptr, p_ptr, step_ptr,
        lr, decay, one_m_beta1, beta2, one_m_beta2, ln_beta1, ln_beta2, eps, ROW,
        HAS_MASTER: tl.constexpr, BLOCK: tl.constexpr,
    ):  # fmt: skip
        i = tl.program_id(0)
        offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        ok = offs < ROW
        start, count = tl.load(starts_ptr + i), tl.load(counts_ptr + i)
        g = tl.zeros((BLOCK,), tl.float32)
        for j in range(start, start + count):  # this row's gradient pieces (one per layer that touched it)
            src = tl.load(order_ptr + j).to(tl.int64)
            g += tl.load(values_ptr + src * ROW + offs, mask=ok, other=0.0).to(tl.float32)
        base = tl.load(rows_ptr + i).to(tl.int64) * ROW + offs
        w = tl.load(w_ptr + base, mask=ok, other=0.0).to(tl.float32) * decay  # decoupled weight decay
        m = tl.load(m_ptr + base, mask=ok, other=0.0)
        v = tl.load(v_ptr + base, mask=ok, other=0.0)
        m = m + one_m_beta1 * (g - m)  # lerp toward g
        v = v * beta2 + one_m_beta2 * g * g
        step = tl.load(step_ptr)
        bc1 = 1.0 - tl.exp(step * ln_beta1)  # 1 - beta1 ** step
        bc2_sqrt = tl.sqrt(1.0 - tl.exp(step * ln_beta2))
        w = w - (lr / bc1) * (m / (tl.sqrt(v) / bc2_sqrt + eps))
        tl.store(m_ptr + base, m, mask=ok)
        tl.store(v_ptr + base, v, mask=ok)
        tl.store(w_ptr + base, w, mask=ok)
        if HAS_MASTER:  # the parameter holds the low-precision copy of its master rows
            tl.store(p_ptr + base, w.to(p_ptr.dtype.element_ty, fp_downcast_rounding="rtne"), mask=ok)


def lazy_adamw_rows_(
    p: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    master: torch.Tensor | None,
    step: torch.Tensor,
    lr: float,
    weight_decay: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """AdamW on the rows of p (R, ...) named by the row-sparse COO `grad` (rows may repeat: their
    pieces are summed), in place: exp_avg / exp_avg_sq / master (float32, p's shape; master None
    for a float32 p, which is then its own master) and p. `step` (float32, on p's device) is the
    step count after this step."""
    rows = grad._indices()[0]
    if rows.numel() == 0:
        return
    values = grad._values().contiguous()  # (nnz, ...) in the gradient's dtype
    order = rows.argsort(stable=True)  # (nnz,) the pieces of each row together
    uniq, counts = torch.unique_consecutive(rows.index_select(0, order), return_counts=True)  # (U,), (U,)
    starts = counts.cumsum(0) - counts
    ROW = p[0].numel()
    w = master if master is not None else p
    grid = (uniq.numel(), triton.cdiv(ROW, BLOCK))
    _lazy_adamw_kernel[grid](
        values, order, uniq, starts, counts, exp_avg, exp_avg_sq, w, p, step,
        # 1 - lr wd and 1 - beta in double on the host, as torch's scalars (1 - beta2 in float32 is 1.3e-5 off)
        float(lr), 1.0 - lr * weight_decay, 1.0 - beta1, float(beta2), 1.0 - beta2, math.log(beta1), math.log(beta2),
        float(eps), ROW,
        HAS_MASTER=master is not None, BLOCK=BLOCK,
    )  # fmt: skip
