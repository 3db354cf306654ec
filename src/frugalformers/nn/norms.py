"""Normalisation layers: LayerNorm (BERT family, post-LN) and RMSNorm (T5 / Llama families, pre-LN)."""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm without mean subtraction or bias (T5 "LayerNorm", Llama RMSNorm).

    The statistics and the scaling are computed in float32 whatever the input dtype and the
    result is cast back to the input dtype, so bf16 runs match fp32 ones to bf16 tolerance.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        normed = x.float() * torch.rsqrt(variance + self.eps)
        return (self.weight * normed).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    """`layernorm` (with bias, as BERT) or `rmsnorm` (T5 / Llama)."""
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps)
    raise ValueError(f"norm={kind!r} is not a known norm; use 'layernorm' or 'rmsnorm'")
