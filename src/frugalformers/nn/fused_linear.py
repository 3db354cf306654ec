"""Sibling projections as one GEMM for decoding (gpt-fast's fused `wqkv` and gate/up).

At decode time a step multiplies a handful of rows by every weight matrix, so it is bound by
reading the weights, and many small GEMMs (q, k, v; gate, up) run at a fraction of the memory
bandwidth (measured on an H200 at batch 32: ~40%). `fuse_linears` re-points the weights of
linears that share an input into one concatenated tensor, so the caller runs one larger GEMM.

The weights are re-pointed with `param.data = view`: the Parameter objects stay the same, so an
optimizer holding them keeps updating the (now shared) storage, no memory is duplicated, and the
module's state dict keeps its names. `model.to(...)` after fusing gives each parameter its own
storage again; the fused tensor is then stale, which is why callers fuse right before decoding
(`setup_cache`) and drop the fused tensor afterwards (`clear_cache`).

Decode GEMMs (`decode_gemm`, opt-in while they are measured): "cublas" (default) is `F.linear`;
"triton" is `nn.skinny_gemm.skinny_linear`, one Triton kernel that streams the weight once; and
"split-k" (measured slower than the default on an H200, RESULTS.md `gqa-decode-analysis`): a
decode GEMM has a few rows and N outputs, so it has only ~N/128 output tiles, e.g. 16 thread
blocks for a 2048-wide projection on a GPU with 132 SMs, and cannot stream its weight at full
bandwidth. `split_k_linear` cuts K into S
chunks and runs them as one batched GEMM on views of the input and the weight (no copies, also
under torch.compile, which passes the strided views to the same extern bmm), then sums the S
partial products in float32: S times as many thread blocks for the same bytes.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

DECODE_MAX_ROWS = 64  # a GEMM with more rows than this (a prefill) is a regular one: cuBLAS, unsplit
SPLIT_K_MIN_CHUNK = 256  # K chunks shorter than this stop paying for their partial sums


def fuse_linears(linears: list[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Concatenate the weights (out dims) and biases of `linears` and make each parameter a view of
    the result; return (weight (sum out, in), bias (sum out,) or None)."""
    with torch.no_grad():
        weight = torch.cat([lin.weight for lin in linears])
        bias = torch.cat([lin.bias for lin in linears]) if linears[0].bias is not None else None
        start = 0
        for lin in linears:
            n = lin.weight.shape[0]
            lin.weight.data = weight[start : start + n]
            if bias is not None:
                lin.bias.data = bias[start : start + n]
            start += n
    return weight, bias


def split_k_count(n: int, k: int, target_tiles: int, tile_n: int = 128) -> int:
    """The number of K chunks S (a power of two dividing k, chunks >= SPLIT_K_MIN_CHUNK) that gives
    a GEMM with `n` outputs at least `target_tiles` output tiles of width `tile_n`, or the most
    that these constraints allow."""
    s = 1
    while -(-n // tile_n) * s < target_tiles and k % (2 * s) == 0 and k // (2 * s) >= SPLIT_K_MIN_CHUNK:
        s *= 2
    return s


def split_k_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, splits: int) -> torch.Tensor:
    """`F.linear(x, weight, bias)` as `splits` GEMMs over chunks of K, summed in float32.

    x (..., K), weight (N, K) contiguous, K divisible by `splits`."""
    *lead, K = x.shape
    N = weight.shape[0]
    if K % splits:
        raise ValueError(f"splits={splits} does not divide the input width {K}")
    c = K // splits
    xs = x.reshape(-1, splits, c).transpose(0, 1)  # (S, M, c): chunk s of every row, a view
    ws = weight.view(N, splits, c).permute(1, 2, 0)  # (S, c, N): chunk s of every weight row, transposed view
    acc = torch.promote_types(x.dtype, torch.float32)
    y = torch.bmm(xs, ws).to(acc).sum(0)  # (M, N): partial products summed in (at least) float32
    if bias is not None:
        y = y + bias.to(acc)
    return y.to(x.dtype).reshape(*lead, N)  # (..., N)


DECODE_GEMMS = ("cublas", "split-k", "triton")


def is_decode_gemm(x: torch.Tensor) -> bool:
    """x (..., K) has at most DECODE_MAX_ROWS rows: a decode step's GEMM, bound by its weight."""
    return x.numel() // max(x.shape[-1], 1) <= DECODE_MAX_ROWS


def decode_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, how: int | str):
    """`F.linear` as a decode GEMM. `how`: 0 (plain), "triton" (`skinny_linear`, which itself
    falls back to `F.linear` where it does not apply; "triton+pdl" launches it with programmatic
    dependent launch), or a split-K tile target > 0: split over K
    (`split_k_linear`) when it `is_decode_gemm`, its N outputs make fewer
    than `how` tiles and the weight is contiguous (its chunks are views)."""
    if how in ("triton", "triton+pdl"):
        from frugalformers.nn.skinny_gemm import skinny_linear

        return skinny_linear(x, weight, bias, pdl=how == "triton+pdl")
    target_tiles = how
    if target_tiles and is_decode_gemm(x) and weight.is_contiguous():
        splits = split_k_count(weight.shape[0], weight.shape[1], target_tiles)
        if splits > 1:
            return split_k_linear(x, weight, bias, splits)
    return F.linear(x, weight, bias)


def project(lin: nn.Linear, x: torch.Tensor, how: int | str) -> torch.Tensor:
    """`lin(x)`, or `decode_linear` on its weights while decoding with another decode GEMM (`how`)."""
    return decode_linear(x, lin.weight, lin.bias, how) if how else lin(x)


def split_k_tiles(device: torch.device) -> int:
    """Output tiles a decode GEMM should have: two per SM on CUDA (one wave of two blocks per SM);
    on CPU 64, so that the split path runs (and is tested) there too."""
    if device.type == "cuda":
        return 2 * torch.cuda.get_device_properties(device).multi_processor_count
    return 64


def set_decoding_fusion(
    module: nn.Module,
    enabled: bool,
    decode_gemm: str = "cublas",
    grouped_decode: str = "auto",
    pdl: bool = False,
    cache_bytes: int | None = None,
) -> None:
    """Fuse (or drop the fused tensors of) every block under `module` that supports it;
    `decode_gemm` picks their decode GEMMs (DECODE_GEMMS, `decode_linear`); `grouped_decode` how
    attention with grouped kv heads decodes (`nn.attention.grouped_decode_attention`; "auto": the
    Triton kernel on CUDA for a layer cache of `cache_bytes` or more, `resolve_grouped_decode`); `pdl`
    launches our Triton decode kernels (decode_gemm "triton", grouped_decode "triton") with
    programmatic dependent launch (`nn.pdl`)."""
    from frugalformers.nn.attention import resolve_grouped_decode  # (attention imports this module)

    device = next(module.parameters()).device
    asked, grouped_decode = grouped_decode, resolve_grouped_decode(grouped_decode, device, cache_bytes)  # checked
    if decode_gemm not in DECODE_GEMMS:
        raise ValueError(f"decode_gemm={decode_gemm!r} is not one of {DECODE_GEMMS}")
    how: int | str = 0  # what each block's `decode_gemm` holds (`decode_linear`)
    if enabled and decode_gemm == "split-k":
        how = split_k_tiles(device)
    elif enabled and decode_gemm == "triton":
        how = "triton+pdl" if pdl else "triton"
    if enabled and "triton" in (decode_gemm, asked):
        _warn_if_triton_cannot_run(device)
    if enabled and pdl and "triton" not in (decode_gemm, grouped_decode):
        raise ValueError(
            f"pdl=True launches our Triton decode kernels, but decode_gemm={decode_gemm!r} and "
            f"grouped_decode={asked!r} (on {device.type}: {grouped_decode!r}) use none: pass decode_gemm='triton' or "
            "grouped_decode='triton'"
        )
    for m in module.modules():
        if hasattr(m, "fuse_projections"):
            if enabled and not _is_sharded(m):
                m.fuse_projections()
                m.decode_gemm = how
            else:
                m.unfuse_projections()
                m.decode_gemm = 0
        if hasattr(m, "grouped_decode"):
            m.grouped_decode = grouped_decode if enabled else "matmul"
            m.decode_pdl = bool(enabled and pdl)


def _warn_if_triton_cannot_run(device: torch.device) -> None:
    """The Triton decode kernels off CUDA (or without Triton) fall back to F.linear and the matmul
    attention: same results, said once."""
    from frugalformers.nn import skinny_gemm

    if not skinny_gemm.runs_on(device):
        why = "Triton is not installed" if skinny_gemm.triton is None else f"the model is on {device.type}, not CUDA"
        warnings.warn(f"the Triton decode kernels fall back to PyTorch here: {why}", stacklevel=3)


def _is_sharded(m: nn.Module) -> bool:
    return any(type(p).__name__ == "DTensor" for p in m.parameters(recurse=False))
