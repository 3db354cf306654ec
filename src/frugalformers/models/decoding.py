"""Static KV caches and decode kernels for a stack of decoder layers (decoder-only and T5).

`attach_caches` gives every layer's self-attention a static `KVCache` holding only its G kv heads
and switches the stack to its decoding form (`nn.fused_linear.set_decoding_fusion`: q/k/v and
gate/up as single GEMMs, plus the opt-in decode kernels); `detach_caches` undoes both.
"""

from __future__ import annotations

import torch
from torch import nn

from frugalformers.nn.attention import KVCache
from frugalformers.nn.fused_linear import set_decoding_fusion


def attach_caches(
    stack: nn.Module,
    layers,
    batch: int,
    max_len: int,
    dtype: torch.dtype,
    device,
    decode_gemm: str = "cublas",
    grouped_decode: str = "auto",
    pdl: bool = False,
) -> None:
    """Caches `(batch, G, max_len, D)` on every layer's mixer; `stack` holds the layers.

    Decode kernels (`benchmarks/gqa_decode.py --alts` times them): `decode_gemm` "triton" runs the
    skinny decode GEMMs as one Triton kernel each (`nn.skinny_gemm`), "split-k" splits them over K
    (`nn.fused_linear`); `grouped_decode` "auto" (default) attends with one flash-decoding Triton
    kernel (`nn.decode_attention`) on CUDA when a layer's cache is large enough to gain from it
    (`nn.attention.resolve_grouped_decode`) and with two matmuls otherwise, "triton" / "matmul" pick
    one of them, "sdpa" uses SDPA on regrouped queries, "flex" FlexAttention; `pdl` launches the
    Triton kernels with programmatic dependent launch (Hopper; with `generate(compile=True)`
    Inductor's kernels too, `nn.pdl`)."""
    m = layers[0].mixer
    cache_bytes = 2 * batch * m.n_kv_heads * max_len * m.head_dim * dtype.itemsize  # one layer's K and V
    set_decoding_fusion(stack, True, decode_gemm, grouped_decode, pdl, cache_bytes)  # checks the options first
    for layer in layers:
        m = layer.mixer
        m.kv_cache = KVCache(batch, m.n_kv_heads, max_len, m.head_dim, dtype, device)


def detach_caches(stack: nn.Module, layers) -> None:
    for layer in layers:
        layer.mixer.kv_cache = None
    set_decoding_fusion(stack, False)
