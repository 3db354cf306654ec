"""Decode GEMMs with a few rows as one Triton kernel that streams the weight once (opt-in, being
measured: `setup_cache(..., decode_gemm="triton")`, `benchmarks/gqa_decode.py --alts triton-gemm`).

y = x W^T (+ b) for x (M, K) with M <= DECODE_MAX_ROWS rows (a decode step's batch) and W (N, K)
contiguous (the `nn.Linear` layout). A decode step is bound by reading the weights: the floor of
one GEMM is N K 2 bytes over the memory bandwidth. On an H200 at M = 32, cuBLAS streams the 1B
decoder's weights at ~40% of the measured copy bandwidth (RESULTS.md, `gqa-decode-analysis`), and
splitting K in PyTorch (`nn.fused_linear.split_k_linear`) made the step slower, not faster.

The kernel: one program per BLOCK_N output columns. BLOCK_N is small (16-64), so a 2048-wide
projection already has 32-128 programs and K is never split: no partial sums in memory, no second
pass, the bias added and the output cast in the same program. Each program walks K in BLOCK_K
steps, loading a (BLOCK_N, BLOCK_K) weight tile and the (BLOCK_M, BLOCK_K) input tile (the input
is tiny and stays in L2), and accumulates in float32 with `tl.dot`. `num_stages` keeps several
weight tiles in flight per SM, which is what bandwidth needs. On CUDA the block sizes are
autotuned per (M, N, K) on the first call (outside CUDA-graph capture: the decode benchmark warms
the step up first). Under `TRITON_INTERPRET=1` the same kernel runs on CPU tensors with a fixed
configuration: that is how the tests hold it to `F.linear`.
"""

from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn.functional as F

from frugalformers.nn.fused_linear import is_decode_gemm

try:
    import triton
    import triton.language as tl
except ImportError:  # the CPU wheel of torch comes without Triton; the GPU image has it
    triton = None

SHARED_MEMORY_BYTES = 227 * 1024  # per thread block on sm_90 (H100 / H200)
INTERPRET_CONFIG = {"BLOCK_N": 16, "BLOCK_K": 32}  # the fixed configuration of the CPU interpreter


# Triton's interpreter runs kernels on CPU tensors; Triton reads the variable at import, so do we
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def shared_bytes(config, block_m: int, element_size: int) -> int:
    """Shared memory a configuration's software pipeline holds: num_stages - 1 buffers of the input
    and weight tiles (what Triton's compiler allocates for this kernel, checked by a test)."""
    kw = config.kwargs
    return (config.num_stages - 1) * (block_m + kw["BLOCK_N"]) * kw["BLOCK_K"] * element_size


def runs_on(device: torch.device) -> bool:
    """Triton is there and can run on `device`: CUDA, or CPU under the interpreter."""
    return triton is not None and (device.type == "cuda" or (INTERPRET and device.type == "cpu"))


def skinny_gemm_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Triton runs on x's device (`runs_on`), a decode GEMM (`is_decode_gemm`), the weight contiguous,
    a floating dtype both sides share, and no gradient asked for (the kernel has no backward: under
    autograd the GEMM stays `F.linear`)."""
    return (
        runs_on(x.device)
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and is_decode_gemm(x)
        and weight.is_contiguous()
        and x.dtype == weight.dtype
        and x.dtype in (torch.bfloat16, torch.float16, torch.float32)
    )


if triton is not None:

    @triton.jit
    def tile_dot(a, b, IEEE: tl.constexpr):
        """tl.dot(a, b) in float32; with IEEE (float32 inputs) full-precision products, as torch's
        matmuls without TF32 (the kernels' tests compare at float32 tolerances). Shared by our
        Triton kernels (`nn.decode_attention`, `nn.word_expert_kernels`)."""
        if IEEE:
            return tl.dot(a, b, input_precision="ieee")
        return tl.dot(a, b)

    @triton.jit
    def _skinny_kernel(
        x_ptr,
        w_ptr,
        b_ptr,
        y_ptr,
        M,
        N,
        K,
        stride_xm,
        stride_wn,
        stride_ym,
        HAS_BIAS: tl.constexpr,
        IEEE: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        PDL: tl.constexpr = False,
    ):
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # this program's output columns
        rm = tl.arange(0, BLOCK_M)  # every row (M <= BLOCK_M)
        rk = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        start = 0
        if PDL:  # launched while the previous kernel drains: fetch the first weight tile, then wait for x
            tl.extra.cuda.gdc_launch_dependents()
            w = tl.load(
                w_ptr + rn[:, None] * stride_wn + rk[None, :], mask=(rn[:, None] < N) & (rk[None, :] < K), other=0.0
            )
            tl.extra.cuda.gdc_wait()  # x (and anything else the previous kernel wrote) is visible after this
            x = tl.load(
                x_ptr + rm[:, None] * stride_xm + rk[None, :], mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0
            )
            acc += tile_dot(x, tl.trans(w), IEEE)  # (BLOCK_M, BLOCK_N)
            start = BLOCK_K
        for k0 in range(start, K, BLOCK_K):
            kk = k0 + rk
            x = tl.load(
                x_ptr + rm[:, None] * stride_xm + kk[None, :], mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0
            )  # (BLOCK_M, BLOCK_K)
            w = tl.load(
                w_ptr + rn[:, None] * stride_wn + kk[None, :], mask=(rn[:, None] < N) & (kk[None, :] < K), other=0.0
            )  # (BLOCK_N, BLOCK_K)
            acc += tile_dot(x, tl.trans(w), IEEE)  # (BLOCK_M, BLOCK_N)
        if HAS_BIAS:
            acc += tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        out = y_ptr + rm[:, None] * stride_ym + rn[None, :]
        tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=(rm[:, None] < M) & (rn[None, :] < N))

    def _fitting(configs: list, named_args: dict, **kwargs) -> list:
        """The configurations whose pipelined tiles fit shared memory (the autotuner would otherwise
        compile and fail them one by one)."""
        elt = named_args["x_ptr"].element_size()
        fit = [c for c in configs if shared_bytes(c, kwargs["BLOCK_M"], elt) <= SHARED_MEMORY_BYTES]
        return fit or configs[:1]

    def _configs() -> list:
        """Block sizes and pipelining depths to try (`_fitting` drops those whose tiles cannot fit
        shared memory at the call's row count)."""
        return [
            triton.Config({"BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=s)
            for n in (16, 32, 64)
            for k in (128, 256, 512)
            for w in (4, 8)
            for s in (3, 4, 5)
            if n * k <= 16384 and not (w == 8 and n == 16)
        ]

    _skinny_kernel_tuned = triton.autotune(
        configs=_configs(), key=["M", "N", "K", "HAS_BIAS", "PDL"], prune_configs_by={"early_config_prune": _fitting}
    )(_skinny_kernel)


def _launch(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, config: dict | None, pdl: bool = False
) -> torch.Tensor:
    """x (..., K) -> (..., N) in x's dtype; `config` None autotunes (CUDA); `pdl` launches with
    programmatic dependent launch (Hopper; not under the interpreter)."""
    *lead, K = x.shape
    x2 = x.reshape(-1, K).contiguous()  # (M, K)
    M, N = x2.shape[0], weight.shape[0]
    y = torch.empty(M, N, dtype=x2.dtype, device=x2.device)
    block_m = max(16, triton.next_power_of_2(M))  # tl.dot needs >= 16 on every side
    args = (x2, weight, bias if bias is not None else x2, y, M, N, K, x2.stride(0), weight.stride(0), y.stride(0))
    pdl = bool(pdl) and not INTERPRET
    flags = {"HAS_BIAS": bias is not None, "IEEE": x2.dtype == torch.float32, "BLOCK_M": block_m, "PDL": pdl}
    if pdl:
        flags["launch_pdl"] = True
    if config is None and not INTERPRET:
        _skinny_kernel_tuned[lambda meta: (triton.cdiv(N, meta["BLOCK_N"]),)](*args, **flags)
    else:
        config = config or INTERPRET_CONFIG
        _skinny_kernel[(triton.cdiv(N, config["BLOCK_N"]),)](*args, **flags, **config)
    return y.reshape(*lead, N)  # (..., N)


@torch.library.custom_op("frugalformers::skinny_linear", mutates_args=())
def _skinny_linear_op(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], pdl: bool) -> torch.Tensor:  # noqa: UP045 - the schema inference of older torch reads typing.Optional
    """An opaque op for torch.compile (Inductor calls it as it is, inside the compiled step)."""
    return _launch(x, weight, bias, None, pdl)


@_skinny_linear_op.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], pdl: bool) -> torch.Tensor:  # noqa: UP045
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def skinny_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    config: dict | None = None,
    pdl: bool = False,
) -> torch.Tensor:
    """`F.linear(x, weight, bias)` by the Triton kernel where `skinny_gemm_applies`, else `F.linear`.
    Inference only (no backward). `config` ({"BLOCK_N", "BLOCK_K"}) fixes the block sizes instead
    of autotuning (tests). `pdl`: programmatic dependent launch (Hopper): the kernel starts while
    the previous one drains and fetches its first weight tile before waiting for it, which is only
    right while nothing in the step writes the weights (decoding)."""
    if not skinny_gemm_applies(x, weight):
        return F.linear(x, weight, bias)
    if config is not None:
        return _launch(x, weight, bias, config, pdl)
    return _skinny_linear_op(x, weight, bias, pdl)
