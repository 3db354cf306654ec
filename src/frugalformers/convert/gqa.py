"""Multi-head -> grouped-query / multi-query attention conversion (Ainslie et al. 2023, section 2.1).

A model with G_old key/value heads becomes one with G_new (G_old divisible by G_new) by pooling
each contiguous group of G_old / G_new key and value heads into one:

- `mean` (the paper's choice, best in its Figure 4 ablation): the mean of the group's projections;
- `first`: the first head of the group;
- `random`: fresh random projections (the paper's "from scratch" ablation).

Contiguous groups keep the convention query head h -> kv head h // (H / G): pooled kv head g
serves exactly the query heads that used old kv heads g * r ... (g + 1) * r - 1, r = G_old / G_new.
Query and output projections are untouched. With G_new = G_old the conversion is the identity.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from frugalformers.nn.attention import Attention

METHODS = ("mean", "first", "random")
STACKS = ("decoder", "encoder", "all")


def pool_heads(t: torch.Tensor, g_old: int, g_new: int, method: str, generator=None) -> torch.Tensor:
    """Pool a k/v projection weight (G_old*D, d_in) or bias (G_old*D,) to G_new heads."""
    r = g_old // g_new
    shape = t.shape
    heads = t.reshape(g_new, r, shape[0] // g_old, *shape[1:])  # (G_new, r, D, ...)
    if method == "mean":
        pooled = heads.float().mean(1).to(t.dtype)
    elif method == "first":
        pooled = heads[:, 0]
    else:
        std = t.float().std().item() if t.numel() > 1 else 0.02
        pooled = torch.randn(heads[:, 0].shape, generator=generator, dtype=torch.float32).mul(std).to(t.dtype)
    return pooled.reshape(g_new * (shape[0] // g_old), *shape[1:])


def repeat_heads(t: torch.Tensor, g_old: int, n_heads: int, head_dim: int) -> torch.Tensor:
    """Expand a k / v weight (G*D, d_in) or bias (G*D,) to n_heads heads, each kv head repeated for
    its query group; `pool_heads(..., "mean")` undoes it exactly."""
    grouped = t.reshape(g_old, head_dim, -1)  # (G, D, d_in | 1)
    return grouped.repeat_interleave(n_heads // g_old, 0).reshape(n_heads * head_dim, *t.shape[1:])


def convert_attention(attn: Attention, n_kv_heads: int, method: str = "mean", generator=None) -> None:
    """Pool `attn`'s key/value projections to `n_kv_heads` heads, in place."""
    g_old = attn.n_kv_heads
    if n_kv_heads <= 0 or g_old % n_kv_heads:
        valid = [g for g in range(1, g_old + 1) if g_old % g == 0]
        raise ValueError(
            f"cannot pool {g_old} kv heads into n_kv_heads={n_kv_heads}: use a divisor of {g_old}: {valid}"
        )
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}")
    if n_kv_heads == g_old:
        return
    _regroup_kv(attn, n_kv_heads, lambda t: pool_heads(t, g_old, n_kv_heads, method, generator))


def _regroup_kv(attn: Attention, n_kv_heads: int, regroup) -> None:
    """Replace `attn`'s k / v projections by ones with `n_kv_heads` heads, in place; `regroup` maps
    each weight (G*D, d_in) and bias (G*D,) to its (n_kv_heads*D, ...) counterpart."""
    with torch.no_grad():
        for name in ("k", "v"):
            old: nn.Linear = getattr(attn, name)
            new = nn.Linear(
                old.in_features,
                n_kv_heads * attn.head_dim,
                bias=old.bias is not None,
                device=old.weight.device,
                dtype=old.weight.dtype,
            )
            new.weight.copy_(regroup(old.weight))
            if old.bias is not None:
                new.bias.copy_(regroup(old.bias))
            setattr(attn, name, new)
    attn.n_kv_heads = n_kv_heads


def _attentions(model: nn.Module, stacks: str) -> list[Attention]:
    """The attention modules a conversion touches: for T5, decoder self + cross ("decoder", the paper),
    the encoder's ("encoder") or both ("all"); for BERT and decoder-only models, every layer."""
    family = model.config.family
    found = []
    for name, m in model.named_modules():
        if not isinstance(m, Attention):
            continue
        if family == "t5":
            in_decoder = name.startswith("decoder.") or ".decoder." in name
            if stacks == "all" or (stacks == "decoder") == in_decoder:
                found.append(m)
        else:
            found.append(m)
    return found


def convert_model(
    model: nn.Module, n_kv_heads: int, method: str = "mean", stacks: str = "decoder", seed: int = 0
) -> nn.Module:
    """Convert `model` (any family) to `n_kv_heads` key/value heads in place; return it with its
    config updated. For T5-family models `stacks` picks decoder (default, as in the paper),
    encoder or all attention layers."""
    if stacks not in STACKS:
        raise ValueError(f"stacks={stacks!r} is not one of {STACKS}")
    config = model.config
    g = torch.Generator().manual_seed(seed)
    for attn in _attentions(model, stacks):
        convert_attention(attn, n_kv_heads, method, g)
    if config.family == "t5":
        updates = {}
        if stacks in ("decoder", "all"):
            updates["n_kv_heads"] = n_kv_heads
            updates["cross_n_kv_heads"] = None  # self- and cross-attention now both have n_kv_heads
        if stacks in ("encoder", "all"):
            updates["encoder_n_kv_heads"] = n_kv_heads
        model.config = config.replace(**updates)
    else:
        model.config = config.replace(n_kv_heads=n_kv_heads)
    return model


def expand_model(model: nn.Module, stacks: str = "all") -> nn.Module:
    """The exact multi-head model of a grouped one: each kv head repeated for its query group."""
    config = model.config
    for attn in _attentions(model, stacks):
        H, G, D = attn.n_heads, attn.n_kv_heads, attn.head_dim
        if G == H:
            continue
        _regroup_kv(attn, H, functools.partial(repeat_heads, g_old=G, n_heads=H, head_dim=D))
    if config.family == "t5":
        model.config = config.replace(
            n_kv_heads=None if stacks != "encoder" else config.n_kv_heads,
            cross_n_kv_heads=None if stacks != "encoder" else config.cross_n_kv_heads,
            encoder_n_kv_heads=None if stacks != "decoder" else config.encoder_n_kv_heads,
        )
    else:
        model.config = config.replace(n_kv_heads=None)
    return model
