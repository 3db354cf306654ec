"""Multi-head attention with grouped key/value heads: MHA (G = H), GQA (1 < G < H), MQA (G = 1).

Query head h reads key/value head `h // (H // G)` (contiguous groups), the convention of Hugging
Face, SDPA `enable_gqa` and FlashAttention; GQA conversion pools exactly those heads.

Two paths compute the same function:
- `impl="sdpa"` (default): `F.scaled_dot_product_attention` with `enable_gqa`, so K/V are never
  repeated in memory when the kernel supports it; `is_causal` without a mask takes the flash kernel.
- `impl="reference"`: explicit `softmax(q k^T * scale + bias) v` in float32 with K/V repeated per
  group; slow and obviously correct, the oracle for the fast path.

Shapes: B batch, T query length, S key length, H query heads, G kv heads, D head dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from frugalformers.kernels.decode_attention import decode_attention, decode_attention_applies
from frugalformers.nn.fused_linear import fuse_linears
from frugalformers.nn.positions import apply_rotary
from frugalformers.registry import ATTENTION_IMPLS

IMPLS = ATTENTION_IMPLS  # ("sdpa", "reference")


class KVCache(nn.Module):
    """Static key/value cache `(B, G, S_max, D)` for decoding: holds only the G kv heads.

    Positions are written in place at `input_pos`; the shapes never change, so a decode step can be
    compiled or captured in a CUDA graph.
    """

    def __init__(self, batch: int, n_kv_heads: int, max_len: int, head_dim: int, dtype=None, device=None):
        super().__init__()
        shape = (batch, n_kv_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """Write k, v `(B, G, T, D)` at positions `input_pos` (T,); return the whole cache."""
        self.k.index_copy_(2, input_pos, k.to(self.k.dtype))
        self.v.index_copy_(2, input_pos, v.to(self.v.dtype))
        return self.k, self.v

    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2


def _check_heads(d_model: int, n_heads: int, n_kv_heads: int, head_dim: int | None) -> None:
    sizes = {"d_model": d_model, "n_heads": n_heads, "n_kv_heads": n_kv_heads}
    if head_dim is not None:
        sizes["head_dim"] = head_dim
    for name, val in sizes.items():
        if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
            raise ValueError(f"{name}={val!r} must be a positive integer")
    if n_heads % n_kv_heads:
        valid = [g for g in range(1, n_heads + 1) if n_heads % g == 0]
        raise ValueError(
            f"n_heads={n_heads} is not divisible by n_kv_heads={n_kv_heads}: each kv head serves a "
            f"contiguous group of query heads; use n_kv_heads in {valid}"
        )


def build_attention_mask(
    key_padding_mask: torch.Tensor | None,
    attn_bias: torch.Tensor | None,
    causal: bool,
    q_len: int,
    k_len: int,
    dtype: torch.dtype,
    device: torch.device,
    q_pos: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """One additive float mask `(B|1, H|1, T, S)` from padding, bias and causality, or None.

    `key_padding_mask` (B, S) is True for real tokens. Causality compares absolute positions:
    query i (position `q_pos[i]`, default `S - T + i`) sees keys at positions <= its own. Masked
    logits are set to the dtype's most negative finite value, not -inf, so a row whose keys are
    all masked gives a uniform average rather than NaN.
    """
    keep = None
    if key_padding_mask is not None:
        keep = key_padding_mask[:, None, None, :].bool()  # (B, 1, 1, S)
    if causal:
        if q_pos is None:
            q_pos = torch.arange(k_len - q_len, k_len, device=device)
        k_pos = torch.arange(k_len, device=device)
        causal_keep = (k_pos[None, :] <= q_pos[:, None])[None, None]  # (1, 1, T, S)
        keep = causal_keep if keep is None else keep & causal_keep
    if keep is None and attn_bias is None:
        return None
    mask = attn_bias.to(dtype) if attn_bias is not None else torch.zeros((1, 1, 1, 1), dtype=dtype, device=device)
    if keep is not None:
        mask = mask.masked_fill(~keep, torch.finfo(dtype).min)
    return mask


GROUPED_DECODE = ("matmul", "triton")


def grouped_decode_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    impl: str = "matmul",
) -> torch.Tensor:
    """Attention for a few query positions against a long cache, reading each kv head once.

    q (B, H, T, D) with small T, k/v (B, G, S, D). The H query heads are regrouped as (G, r*T) rows
    per kv head, r = H / G, so each kv head serves its whole query group at once: K and V are never
    repeated (SDPA with a mask and `enable_gqa` expands them). The regrouped problem is plain
    attention with G heads and r*T query rows, computed by
    - `impl="matmul"`: two batched matmuls around a float32 softmax;
    - `impl="triton"`: one flash-decoding Triton kernel (`kernels.decode_attention`: a program per
      batch row, kv head and cache split, online softmax, one read of the cache); where it does not
      apply (no Triton, CPU, an untiled head dim, autograd) the matmul path runs.
    (SDPA on the regrouped heads and FlexAttention were tried and measured, RESULTS.md; removed.)
    """
    if impl not in GROUPED_DECODE:
        raise ValueError(f"impl={impl!r} is not a grouped decode path; use one of {GROUPED_DECODE}")
    B, H, T, D = q.shape
    G, S = k.shape[1], k.shape[2]
    if impl == "triton" and decode_attention_applies(q, k):
        return decode_attention(q, k, v, mask, scale)
    r = H // G
    qg = q.reshape(B, G, r * T, D)  # (B, G, r*T, D): head h = g*r + j, rows ordered (j, t)
    scores = torch.matmul(qg, k.transpose(-1, -2)).float() * scale  # (B, G, r*T, S)
    if mask is not None:  # (B|1, H|1, T, S) -> (B|1, G|1, r*T, S)
        if mask.shape[1] == 1:
            m = mask.expand(mask.shape[0], 1, T, S).repeat(1, 1, r, 1)  # (B|1, 1, r*T, S)
        else:
            m = mask.reshape(mask.shape[0], G, r * T, S)
        scores = scores + m.float()
    probs = scores.softmax(-1).to(v.dtype)
    out = torch.matmul(probs, v)  # (B, G, r*T, D)
    return out.reshape(B, H, T, D)


CUDNN_BAD_KEY_TILE = (128, 64)  # key lengths of 64 mod 128: cuDNN's backward NaN (pytorch/pytorch#196678)
NOT_CUDNN = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def cudnn_backward_unsafe(q: torch.Tensor, k: torch.Tensor, attn_mask: torch.Tensor | None) -> bool:
    """Whether SDPA's cuDNN backend may return NaN in grad_q here: an explicit mask, CUDA, and a key
    length of 64 mod 128 (pytorch/pytorch#196678, torch 2.11+ on H100 / H200, when a query row's
    logsumexp is below -88.7, which T5's unscaled attention logits reach; forward, grad_k and
    grad_v are fine). It hit T5-family cross-attention over 1,088-token inputs (1,024 + 64)."""
    tile, bad = CUDNN_BAD_KEY_TILE
    return attn_mask is not None and q.is_cuda and k.shape[-2] % tile == bad


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask=None, **kwargs) -> torch.Tensor:
    """`F.scaled_dot_product_attention`, kept off the cuDNN backend where `cudnn_backward_unsafe`
    (the memory-efficient kernel takes the call; the same values, a finite backward). That kernel
    has no grouped heads, so there K/V are expanded to the query heads first."""
    if cudnn_backward_unsafe(q, k, attn_mask):
        if kwargs.pop("enable_gqa", False) and k.shape[-3] != q.shape[-3]:
            group = q.shape[-3] // k.shape[-3]
            k, v = k.repeat_interleave(group, -3), v.repeat_interleave(group, -3)  # (B, H, S, D)
        with sdpa_kernel(NOT_CUDNN):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, **kwargs)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, **kwargs)


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v in float32; q (B, H, T, D), k/v (B, G, S, D) -> (B, H, T, D)."""
    n_rep = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(n_rep, dim=1)  # (B, H, S, D): head h uses kv head h // n_rep
    v = v.repeat_interleave(n_rep, dim=1)
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale  # (B, H, T, S)
    if mask is not None:
        scores = scores + mask.float()
    probs = scores.softmax(dim=-1)
    if dropout_p > 0:
        probs = F.dropout(probs, p=dropout_p)
    return torch.matmul(probs, v.float()).to(q.dtype)


class Attention(nn.Module):
    """Self- or cross-attention with `n_kv_heads` key/value heads.

    Args:
        d_model: model width (input and output size).
        n_heads: query heads H.
        n_kv_heads: key/value heads G (default H). H must be divisible by G.
        head_dim: D (default d_model // n_heads; T5 sets it independently).
        causal: mask keys after the query position (decoders).
        bias: biases on the q/k/v/o projections (BERT: yes; T5 / Llama: no).
        dropout: attention-probability dropout (BERT: 0.1).
        scale: logit scale (default 1/sqrt(D); T5 uses 1.0, its init absorbs the scale).
        d_context: width of the key/value input for cross-attention (default d_model).
        impl: "sdpa" (fast) or "reference" (explicit softmax).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        head_dim: int | None = None,
        causal: bool = False,
        bias: bool = True,
        dropout: float = 0.0,
        scale: float | None = None,
        d_context: int | None = None,
        impl: str = "sdpa",
    ):
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        _check_heads(d_model, n_heads, n_kv_heads, head_dim)
        if head_dim is None:
            if d_model % n_heads:
                raise ValueError(
                    f"d_model={d_model} is not divisible by n_heads={n_heads}; pass head_dim explicitly "
                    f"or choose n_heads dividing d_model"
                )
            head_dim = d_model // n_heads
        if impl not in IMPLS:
            raise ValueError(f"impl={impl!r} is not an attention implementation; use one of {IMPLS}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r} must be in [0, 1)")
        d_context = d_model if d_context is None else d_context
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.causal, self.dropout, self.impl = causal, dropout, impl
        self.scale = head_dim**-0.5 if scale is None else scale
        self.q = nn.Linear(d_model, n_heads * head_dim, bias=bias)
        self.k = nn.Linear(d_context, n_kv_heads * head_dim, bias=bias)
        self.v = nn.Linear(d_context, n_kv_heads * head_dim, bias=bias)
        self.o = nn.Linear(n_heads * head_dim, d_model, bias=bias)
        self._fused_qkv: tuple[torch.Tensor, torch.Tensor | None] | None = None  # set while decoding
        self.grouped_decode = "matmul"  # how grouped kv heads are attended while decoding (`grouped_decode_attention`)

    def fuse_projections(self) -> None:
        """q, k, v as one GEMM for self-attention (decoding); see `nn.fused_linear`."""
        if self.q.in_features == self.k.in_features:
            self._fused_qkv = fuse_linears([self.q, self.k, self.v])

    def unfuse_projections(self) -> None:
        self._fused_qkv = None

    def extra_repr(self) -> str:
        return (
            f"n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, head_dim={self.head_dim}, "
            f"causal={self.causal}, impl={self.impl!r}"
        )

    def project_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values `(B, G, S, D)` of `context` (B, S, d): cached once for cross-attention."""
        B, S, _ = context.shape
        k = self.k(context).view(B, S, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, G, S, D)
        v = self.v(context).view(B, S, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, G, S, D)
        return k, v

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        key_padding_mask: torch.Tensor | None = None,
        attn_bias: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        kv_cache: KVCache | None = None,
        input_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend from `x` (B, T, d) to itself, or to `context` (B, S, d_context), or to given `kv`.

        key_padding_mask: (B, S) bool, True for real keys (over the cache length when caching).
        attn_bias: additive float logits bias (1|B, H, T, S), e.g. T5's relative position bias.
        rope: (cos, sin) for the query positions; applied to q and to the new k.
        kv: precomputed `project_kv(context)`; skips the k/v projections (cross-attention decoding).
        kv_cache: static cache; the new k/v are written at `input_pos` (T,), then all S_max cached
            positions are attended to, causally by absolute position.
        """
        B, T, _ = x.shape
        H, G, D = self.n_heads, self.n_kv_heads, self.head_dim
        if self._fused_qkv is not None and context is None and kv is None:  # one GEMM for q, k, v
            qkv = F.linear(x, *self._fused_qkv)  # (B, T, (H + 2G) * D)
            q, k, v = qkv.split([H * D, G * D, G * D], dim=-1)
            q = q.reshape(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
            k = k.reshape(B, T, G, D).transpose(1, 2)  # (B, G, T, D)
            v = v.reshape(B, T, G, D).transpose(1, 2)
        else:
            q = self.q(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
            if kv is not None:
                k, v = kv
            else:
                k, v = self.project_kv(x if context is None else context)  # (B, G, S, D)
        if rope is not None:
            cos, sin = rope
            q = apply_rotary(q, cos, sin)
            k = apply_rotary(k, cos, sin)
        q_pos = None
        if kv_cache is not None:
            if input_pos is None:
                raise ValueError("kv_cache needs input_pos, the (T,) positions of the new tokens in the cache")
            k, v = kv_cache.update(input_pos, k, v)  # (B, G, S_max, D)
            q_pos = input_pos
        S = k.shape[2]
        causal = self.causal and context is None and kv is None
        dropout_p = self.dropout if self.training else 0.0
        if self.impl == "reference":
            mask = build_attention_mask(key_padding_mask, attn_bias, causal, T, S, torch.float32, x.device, q_pos)
            out = reference_attention(q, k, v, mask, self.scale, dropout_p)
        elif (
            kv_cache is not None
            and T <= 4
            and (
                self.n_kv_heads != self.n_heads or (self.grouped_decode == "triton" and decode_attention_applies(q, k))
            )
            and dropout_p == 0.0
        ):
            # decoding with grouped kv heads: one pass over each cached kv head for its whole query group
            # (SDPA with a mask and enable_gqa expands K/V; for MHA, measured on an H200, SDPA is ~10%
            # faster than the matmul path; the Triton kernel serves MHA too, as groups of one)
            mask = build_attention_mask(key_padding_mask, attn_bias, causal, T, S, torch.float32, x.device, q_pos)
            out = grouped_decode_attention(q, k.to(q.dtype), v.to(q.dtype), mask, self.scale, self.grouped_decode)
        else:
            simple_causal = causal and key_padding_mask is None and attn_bias is None and q_pos is None and T == S
            mask = None
            if not simple_causal:
                mask = build_attention_mask(key_padding_mask, attn_bias, causal, T, S, q.dtype, x.device, q_pos)
            out = sdpa(
                q,
                k.to(q.dtype),
                v.to(q.dtype),
                attn_mask=mask,
                dropout_p=dropout_p,
                is_causal=simple_causal,
                scale=self.scale,
                enable_gqa=self.n_kv_heads != self.n_heads,
            )  # (B, H, T, D)
        out = out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)  # (B, T, H*D)
        return self.o(out)
