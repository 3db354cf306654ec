"""LongT5 transient-global attention (Guo et al. 2022, "LongT5", section 3.1.2; the baseline CoLT5
is measured against).

Each token attends to its local window (|i - j| <= radius, LongT5's radius 127, computed in blocks
of radius + 1 tokens as in `LocalAttention`) and to `n / 16` transient global tokens: the sum of
the (normalised) layer inputs over each fixed block of 16 tokens, RMS-normalised, projected by the
same k / v weights. Position signal: a T5 relative bias over the local window and a second one
over (global block index - the token's block index), both owned by the stack and shared by all its
layers (Hugging Face's layer 0 `relative_attention_bias` / `global_relative_attention_bias`), passed
in `ctx.extras["local_bias"]` and `ctx.extras["global_bias"]`.
Padding: padded tokens join no block; blocks that hold no real token are masked; tokens of a last,
incomplete block are assigned to the block before (the flaxformer / Hugging Face rule).

Fast path: one SDPA call per block of queries over [3 local blocks ++ all global tokens] with an
additive bias. Reference path (`impl="reference"`): full attention over [n tokens ++ globals]
with explicit band mask and biases, in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from frugalformers.nn.attention import reference_attention
from frugalformers.nn.local_attention import LocalAttention, band_mask, local_bias
from frugalformers.nn.norms import RMSNorm
from frugalformers.options import LocalAttentionOptions

NEG = -1e10  # the mask value of the official implementation


def global_block_ids(valid: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """valid (B, n) bool -> block id per token (B, n) (-1: padding) and which of the n // block
    global tokens hold real tokens (B, n // block) bool."""
    B, n = valid.shape
    pos = torch.arange(n, device=valid.device)
    ids = torch.where(valid, pos // block, torch.full_like(pos, -1).expand(B, n))  # (B, n)
    ends = (pos % block == block - 1)[None] & (ids >= 0)  # real tokens that close a block
    full = ends.sum(-1, keepdim=True) - 1  # (B, 1): the last complete block
    ids = torch.where(ids < full, ids, full)  # orphans of an incomplete last block join the one before
    ids = torch.where(valid, ids, torch.full_like(ids, -1))
    n_global = n // block
    segment = torch.arange(n_global, device=valid.device)[None] <= ids.max(-1, keepdim=True).values  # (B, ng)
    return ids, segment


def global_aggregates(x: torch.Tensor, ids: torch.Tensor, n_global: int) -> torch.Tensor:
    """Sum of x (B, n, d) over each block id -> (B, n_global, d) (ids -1 are dropped)."""
    B, n, d = x.shape
    slot = torch.where(ids >= 0, ids, torch.full_like(ids, n_global)).long()  # -1 -> a spare slot
    out = x.new_zeros(B, n_global + 1, d).scatter_add_(1, slot[..., None].expand(B, n, d), x)
    return out[:, :n_global]


class TransientGlobalAttention(LocalAttention):
    """`LocalAttention` plus attention to the transient global tokens of fixed blocks."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        radius: int = LocalAttentionOptions.local_radius,
        global_block: int = LocalAttentionOptions.global_block,
        **kwargs,
    ):
        super().__init__(d_model, n_heads, radius, **kwargs)
        if global_block < 1:
            raise ValueError(f"global_block={global_block} must be >= 1")
        self.global_block = global_block
        self.global_norm = RMSNorm(d_model)

    def forward(self, x: torch.Tensor, ctx=None, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if ctx is not None and key_padding_mask is None:
            key_padding_mask = getattr(ctx, "key_padding_mask", None)
        local_table = ctx.extras.get("local_bias") if ctx is not None else None
        global_table = ctx.extras.get("global_bias") if ctx is not None else None
        B, n, _ = x.shape
        H, D = self.n_heads, self.head_dim
        valid = (
            torch.ones(B, n, dtype=torch.bool, device=x.device) if key_padding_mask is None else key_padding_mask.bool()
        )
        ids, segment = global_block_ids(valid, self.global_block)
        ng = segment.shape[1]
        xg = self.global_norm(global_aggregates(x, ids, ng))  # (B, ng, d)
        q = self.q(x).view(B, n, H, D).transpose(1, 2)  # (B, H, n, D)
        k, v = self.project_kv(x)  # (B, G, n, D)
        kg, vg = self.project_kv(xg)  # (B, G, ng, D)
        side = self._side_bias(global_table, ids, ng, H)  # (B, H, n, ng)
        side = side.masked_fill(~(valid[:, :, None] == segment[:, None, :])[:, None], NEG)
        if self.impl == "reference":
            out = self._reference(q, k, v, kg, vg, valid, side, local_table)
        else:
            out = self._blocked_global(q, k, v, kg, vg, valid, side, local_table)
        return self.o(out.transpose(1, 2).reshape(B, n, H * D))

    @staticmethod
    def _side_bias(global_table, ids: torch.Tensor, ng: int, H: int) -> torch.Tensor:
        """Relative bias (B, H, n, ng) of (global block g - the token's block id): per block pair
        first, then per token, so the backward pass adds 16 tokens into each block row (see
        `RelativePositionBias.by_offset` for why the table is not indexed per token directly)."""
        B, n = ids.shape
        if global_table is None or ng == 0:
            return torch.zeros(B, H, n, ng, device=ids.device)
        g = torch.arange(ng, device=ids.device)
        per_block = global_table.by_offset(g[None, :] - g[:, None], ng)  # (ng blocks, ng globals, H)
        side = per_block[ids.clamp(min=0)]  # (B, n, ng, H); padding rows are masked by the caller
        return side.permute(0, 3, 1, 2).float()

    def _reference(self, q, k, v, kg, vg, valid, side, local_table):
        """Full attention over [n tokens ++ ng globals] with explicit masks, float32."""
        B, H, n, D = q.shape
        i = torch.arange(n, device=q.device)
        local = local_bias(local_table, i[None, :] - i[:, None], H, n)[None]  # (1, H, n, n)
        keep = band_mask(n, self.radius, q.device)[None, None] & valid[:, None, None, :]  # (B, 1, n, n)
        local = local.masked_fill(~keep, NEG)
        mask = torch.cat([local.expand(B, H, n, n), side], dim=-1)  # (B, H, n, n + ng)
        return reference_attention(q, torch.cat([k, kg], 2), torch.cat([v, vg], 2), mask, self.scale)

    def _blocked_global(self, q, k, v, kg, vg, valid, side, local_table):
        B, H, n, D = q.shape
        G, ng = k.shape[1], kg.shape[2]
        qb, kw, vw, keep, rel = self._windows(q, k, v, valid)  # LocalAttention's 3-block windows
        nb, blk = qb.shape[1], qb.shape[3]
        # every block of queries also sees all ng global keys: (B, nb, G, 3*blk + ng, D)
        kw = torch.cat([kw, kg[:, None].expand(B, nb, G, ng, D)], dim=3)
        vw = torch.cat([vw, vg[:, None].expand(B, nb, G, ng, D)], dim=3)
        local = local_bias(local_table, rel, H, 2 * blk)  # (H, blk, 3*blk)
        local = local[None, None].masked_fill(~keep[:, :, None], NEG)  # (B, nb, H, blk, 3*blk)
        side = F.pad(side, (0, 0, 0, nb * blk - n)).reshape(B, H, nb, blk, ng).transpose(1, 2)  # (B, nb, H, blk, ng)
        mask = torch.cat([local.expand(B, nb, H, blk, 3 * blk), side], dim=-1).to(q.dtype)
        return self._attend_windows(qb, kw, vw, mask, n)
