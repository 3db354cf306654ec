"""Position information: learned absolute (BERT), T5 relative bias buckets, rotary (Llama)."""

from __future__ import annotations

import math

import torch
from torch import nn


class LearnedPositions(nn.Module):
    """Absolute position embeddings `(max_len, dim)`, BERT / FNet style."""

    def __init__(self, max_len: int, dim: int):
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.empty(max_len, dim))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, seq_len: int, offset: int = 0) -> torch.Tensor:
        if offset + seq_len > self.max_len:
            raise ValueError(
                f"sequence length {offset + seq_len} exceeds max_seq_len={self.max_len} of the learned "
                f"position table; truncate the input or build the model with max_seq_len>={offset + seq_len}"
            )
        return self.weight[offset : offset + seq_len]  # (T, dim)


def relative_position_bucket(
    relative_position: torch.Tensor, bidirectional: bool, num_buckets: int, max_distance: int
) -> torch.Tensor:
    """T5's bucketing of `key_pos - query_pos` (Raffel et al. 2020, Mesh TensorFlow).

    Half the buckets (per direction when bidirectional) hold exact offsets 0..max_exact-1; the rest
    cover offsets up to `max_distance` logarithmically; larger offsets share the last bucket.
    """
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        distance = -torch.clamp(relative_position, max=0)  # only keys in the past get distinct buckets
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    # log-spaced buckets for distance in [max_exact, max_distance)
    log_ratio = torch.log(distance.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (num_buckets - max_exact)).long()
    large = torch.clamp(large, max=num_buckets - 1)
    return buckets + torch.where(is_small, distance, large)


class RelativePositionBias(nn.Module):
    """Learned scalar bias per (bucket, head), added to attention logits: T5's only position signal.

    Returns `(1, H, T_q, T_k)`. Computed once per stack and shared by all its layers, as in T5.
    """

    def __init__(self, n_heads: int, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = True):
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.weight = nn.Parameter(torch.empty(num_buckets, n_heads))
        nn.init.normal_(self.weight, std=0.02)

    def by_offset(self, rel: torch.Tensor, span: int = 0) -> torch.Tensor:
        """Bias (*rel.shape, H) of key - query offsets `rel`.

        Looked up per distinct offset first (2 s + 1 rows, s = max(span, max_distance)), then per
        pair: the backward pass adds into those rows instead of piling one atomic add per pair onto
        the num_buckets-row table (a 16k LongT5 training step took 23.9 s that way on an H200).
        Offsets beyond s are clamped to it, which is exact: they share the last bucket anyway."""
        s = max(span, self.max_distance)
        offsets = torch.arange(-s, s + 1, device=rel.device)
        per_offset = self.weight[
            relative_position_bucket(offsets, self.bidirectional, self.num_buckets, self.max_distance)
        ]
        return per_offset[rel.clamp(-s, s) + s]

    def forward(self, q_len: int, k_len: int, q_offset: int | torch.Tensor = 0) -> torch.Tensor:
        device = self.weight.device
        q_pos = torch.arange(q_len, device=device) + q_offset  # (T_q,)
        k_pos = torch.arange(k_len, device=device)  # (T_k,)
        rel = k_pos[None, :] - q_pos[:, None]  # (T_q, T_k)
        bias = self.by_offset(rel, q_len + k_len)  # (T_q, T_k, H)
        return bias.permute(2, 0, 1).unsqueeze(0)  # (1, H, T_q, T_k)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al. 2021) in the half-split ("rotate_half") layout.

    This is the layout of Hugging Face Llama / GPT-NeoX checkpoints: dimension i pairs with
    i + head_dim/2. Tables are float32 buffers, not saved in checkpoints.
    """

    def __init__(self, head_dim: int, max_len: int, theta: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head_dim, got head_dim={head_dim}")
        self.head_dim, self.max_len, self.theta = head_dim, max_len, theta
        cos, sin = self._tables(max_len)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _tables(self, max_len: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = 1.0 / (
            self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=device) / self.head_dim)
        )
        t = torch.arange(max_len, dtype=torch.float32, device=device)
        freqs = torch.outer(t, inv_freq)  # (L, D/2)
        emb = torch.cat([freqs, freqs], dim=-1)  # (L, D)
        return emb.cos(), emb.sin()

    def _apply(self, fn, recurse=True):
        # keep the tables in float32 when the module is cast to bf16 / fp16
        super()._apply(fn, recurse)
        if self.cos.dtype != torch.float32 and self.cos.device.type != "meta":
            self.cos, self.sin = self._tables(self.max_len, device=self.cos.device)
        return self

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`positions` (T,) or (B, T) -> cos, sin of shape (..., T, D) in float32."""
        return self.cos[positions], self.sin[positions]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate `x` (B, H, T, D) by cos/sin of shape (T, D) or (B, T, D); computed in float32."""
    if cos.dim() == 3:  # (B, T, D) -> (B, 1, T, D)
        cos, sin = cos[:, None], sin[:, None]
    xf = x.float()
    return (xf * cos + _rotate_half(xf) * sin).to(x.dtype)
