"""The decoding form of a stack of decoder layers (decoder-only and T5), and the one place that
picks how a decode step runs.

`attach_caches` gives every layer's self-attention a static `KVCache` holding only its G kv heads,
fuses q/k/v and gate/up into single GEMMs (`nn.fused_linear`), and sets how attention with grouped
kv heads decodes (`grouped_decode`): "auto" (default) is the flash-decoding Triton kernel
(`kernels.decode_attention`) on CUDA where a layer's cache holds at least AUTO_TRITON_CACHE_BYTES,
two batched matmuls otherwise; "triton" / "matmul" pick one. `detach_caches` undoes it all.

Measured on an H200 (RESULTS.md `gqa-decode-compiled-*`): from 17 MB of cache per layer the kernel's
step is 1.00-1.17x the matmul path's (batch 32, ctx 1k, MHA to MQA; batch 1 at 16k: 1.11x), below
it 0.95-1.00x. Paths tried, measured and removed: a Triton decode GEMM (tied cuBLAS), split-K decode
GEMMs (slower), SDPA / FlexAttention on regrouped heads, programmatic dependent launch, a fused
persistent decode layer (tied the default step); RESULTS.md keeps their numbers.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from frugalformers.kernels.triton_support import runs_on, triton
from frugalformers.nn.attention import GROUPED_DECODE, KVCache

AUTO_TRITON_CACHE_BYTES = 16_000_000  # a layer's cache from which "auto" decodes with the Triton kernel


def resolve_grouped_decode(choice: str, device: torch.device, cache_bytes: int | None = None) -> str:
    """The decode attention path (GROUPED_DECODE) for `choice` on `device` (see the module doc)."""
    if choice == "auto":
        device = torch.device(device)
        big = cache_bytes is None or cache_bytes >= AUTO_TRITON_CACHE_BYTES
        return "triton" if device.type == "cuda" and runs_on(device) and big else "matmul"
    if choice not in GROUPED_DECODE:
        raise ValueError(f"grouped_decode={choice!r} is not one of {('auto', *GROUPED_DECODE)}")
    if choice == "triton" and not runs_on(torch.device(device)):
        why = "Triton is not installed" if triton is None else f"the model is on {torch.device(device).type}, not CUDA"
        warnings.warn(f"the Triton decode attention falls back to the matmul path here: {why}", stacklevel=3)
    return choice


def set_decoding_form(module: nn.Module, enabled: bool, grouped_decode: str = "auto", cache_bytes=None) -> None:
    """Fuse (or drop the fused tensors of) every block under `module` that supports it, and set how
    its attention decodes."""
    device = next(module.parameters()).device
    path = resolve_grouped_decode(grouped_decode, device, cache_bytes)  # checks the option first
    for m in module.modules():
        if hasattr(m, "fuse_projections"):
            if enabled and not _is_sharded(m):
                m.fuse_projections()
            else:
                m.unfuse_projections()
        if hasattr(m, "grouped_decode"):
            m.grouped_decode = path if enabled else "matmul"


def _is_sharded(m: nn.Module) -> bool:
    return any(type(p).__name__ == "DTensor" for p in m.parameters(recurse=False))


def attach_caches(
    stack: nn.Module, layers, batch: int, max_len: int, dtype: torch.dtype, device, grouped_decode: str = "auto"
) -> None:
    """Caches `(batch, G, max_len, D)` on every layer's mixer; `stack` holds the layers."""
    m = layers[0].mixer
    cache_bytes = 2 * batch * m.n_kv_heads * max_len * m.head_dim * dtype.itemsize  # one layer's K and V
    set_decoding_form(stack, True, grouped_decode, cache_bytes)
    for layer in layers:
        m = layer.mixer
        m.kv_cache = KVCache(batch, m.n_kv_heads, max_len, m.head_dim, dtype, device)


def detach_caches(stack: nn.Module, layers) -> None:
    for layer in layers:
        layer.mixer.kv_cache = None
    set_decoding_form(stack, False)
