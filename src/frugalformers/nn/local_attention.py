"""Block-local (sliding-window) attention: each token attends to keys within `radius` positions
(LongT5's local attention, radius 127, and CoLT5's light attention branch).

Fast path (LongT5 / flaxformer layout): the sequence is cut into blocks of radius + 1 tokens; each
block attends to the previous, its own and the next block (3 blocks of keys) under a mask that keeps
|i - j| <= radius, so memory is O(n * 3 * block) instead of O(n^2). Reference path: full attention
with a band mask. Both take an optional key padding mask.

Position signal: LongT5's bucketed T5 relative bias over the key - query offset inside the window
(flaxformer `long_attention.py`, Hugging Face `LongT5LocalAttention.relative_attention_bias`). As in
LongT5 the table belongs to the stack, which shares it among its layers and passes it in
`ctx.extras["local_bias"]` (a `RelativePositionBias` with at least this layer's heads; the first
`n_heads` columns are used). Without a table the layer has no position signal at all.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from frugalformers.nn.attention import Attention, reference_attention, sdpa
from frugalformers.options import LocalAttentionOptions


def local_bias(table, rel: torch.Tensor, H: int, span: int) -> torch.Tensor:
    """The relative bias (H, *rel.shape) of key - query offsets `rel` (|rel| <= span) from a stack's
    `RelativePositionBias` (its first H heads), float32; zeros without a table."""
    if table is None:
        return torch.zeros(H, *rel.shape, device=rel.device)
    return table.by_offset(rel, span)[..., :H].permute(-1, *range(rel.dim())).float()


def band_mask(n: int, radius: int, device=None) -> torch.Tensor:
    i = torch.arange(n, device=device)
    return (i[None, :] - i[:, None]).abs() <= radius  # (n, n) True = may attend


class LocalAttention(Attention):
    """`Attention` restricted to a window of +-radius tokens (non-causal, self-attention)."""

    def __init__(self, d_model: int, n_heads: int, radius: int = LocalAttentionOptions.local_radius, **kwargs):
        super().__init__(d_model, n_heads, causal=False, **kwargs)
        if radius < 1:
            raise ValueError(f"radius={radius} must be >= 1")
        self.radius = radius

    def forward(self, x: torch.Tensor, ctx=None, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if ctx is not None and key_padding_mask is None:
            key_padding_mask = getattr(ctx, "key_padding_mask", None)
        table = ctx.extras.get("local_bias") if ctx is not None else None
        B, n, _ = x.shape
        H, D = self.n_heads, self.head_dim
        q = self.q(x).view(B, n, H, D).transpose(1, 2)  # (B, H, n, D)
        k, v = self.project_kv(x)  # (B, G, n, D)
        if self.impl == "reference":
            i = torch.arange(n, device=x.device)
            keep = band_mask(n, self.radius, x.device)[None, None]  # (1, 1, n, n)
            if key_padding_mask is not None:
                keep = keep & key_padding_mask[:, None, None, :].bool()
            bias = local_bias(table, i[None, :] - i[:, None], H, n)[None]  # (1, H, n, n)
            mask = bias.masked_fill(~keep, torch.finfo(torch.float32).min)
            out = reference_attention(q, k, v, mask, self.scale)
        else:
            out = self._blocked(q, k, v, key_padding_mask, table)
        return self.o(out.transpose(1, 2).reshape(B, n, H * D))

    def _blocked(self, q, k, v, key_padding_mask, table=None):
        B, H, n, _ = q.shape
        valid = torch.ones(B, n, dtype=torch.bool, device=q.device)
        if key_padding_mask is not None:
            valid = key_padding_mask.bool()
        qb, kw, vw, keep, rel = self._windows(q, k, v, valid)
        bias = local_bias(table, rel, H, 2 * qb.shape[3]) if table is not None else None  # (H, blk, 3*blk)
        if bias is None:
            mask = torch.zeros(keep.shape, dtype=q.dtype, device=q.device)[:, :, None]  # (B, nb, 1, blk, 3*blk)
        else:
            mask = bias[None, None].to(q.dtype).expand(B, keep.shape[1], -1, -1, -1)  # (B, nb, H, blk, 3*blk)
        mask = mask.masked_fill(~keep[:, :, None], torch.finfo(q.dtype).min)
        return self._attend_windows(qb, kw, vw, mask, n)

    def _windows(self, q, k, v, valid):
        """The block layout of the fast paths. q (B, H, n, D), k / v (B, G, n, D), valid (B, n) ->
        queries (B, nb, H, blk, D), keys / values of the previous, own and next block
        (B, nb, G, 3*blk, D), keep (B, nb, blk, 3*blk) (inside the radius and not padding) and the
        key - query offsets inside a window (blk, 3*blk). blk = radius + 1."""
        B, H, n, D = q.shape
        G = k.shape[1]
        blk = self.radius + 1
        nb = -(-n // blk)
        pad = nb * blk - n
        # pad to whole blocks, plus one empty block on each side for the neighbours
        q = F.pad(q, (0, 0, 0, pad))
        k = F.pad(k, (0, 0, blk, pad + blk))
        v = F.pad(v, (0, 0, blk, pad + blk))
        kvalid = F.pad(valid, (blk, pad + blk), value=False).reshape(B, nb + 2, blk)
        kvalid = torch.cat([kvalid[:, :-2], kvalid[:, 1:-1], kvalid[:, 2:]], dim=2)  # (B, nb, 3*blk)
        kb = k.reshape(B, G, nb + 2, blk, D).transpose(1, 2)  # (B, nb + 2, G, blk, D)
        vb = v.reshape(B, G, nb + 2, blk, D).transpose(1, 2)
        kw = torch.cat([kb[:, :-2], kb[:, 1:-1], kb[:, 2:]], dim=3)  # (B, nb, G, 3*blk, D)
        vw = torch.cat([vb[:, :-2], vb[:, 1:-1], vb[:, 2:]], dim=3)
        qb = q.reshape(B, H, nb, blk, D).transpose(1, 2)  # (B, nb, H, blk, D)
        qi = torch.arange(blk, device=q.device)[:, None] + blk  # query offset inside the 3-block window
        rel = torch.arange(3 * blk, device=q.device)[None, :] - qi  # (blk, 3*blk)
        keep = (rel.abs() <= self.radius)[None, None] & kvalid[:, :, None, :]  # (B, nb, blk, 3*blk)
        return qb, kw, vw, keep, rel

    def _attend_windows(self, qb, kw, vw, mask, n: int):
        """SDPA per block: qb (B, nb, H, blk, D), kw / vw (B, nb, G, S, D), additive mask
        (B, nb, 1 | H, blk, S) -> (B, H, n, D)."""
        B, nb, H, blk, D = qb.shape
        G, S = kw.shape[2], kw.shape[3]
        out = sdpa(
            qb.reshape(B * nb, H, blk, D),
            kw.reshape(B * nb, G, S, D).to(qb.dtype),
            vw.reshape(B * nb, G, S, D).to(qb.dtype),
            attn_mask=mask.reshape(B * nb, mask.shape[2], blk, S),
            scale=self.scale,
            enable_gqa=G != H,
        )  # (B*nb, H, blk, D)
        out = out.reshape(B, nb, H, blk, D).transpose(1, 2).reshape(B, H, nb * blk, D)
        return out[:, :, :n]
