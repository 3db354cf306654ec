"""The two residual layer shapes every family is built from.

- `PostNormLayer` (BERT family, FNet `EncoderBlock`): x = LN(x + Mix(x)); x = LN(x + FFN(x)).
- `PreNormLayer` (T5, Llama): x = x + Mix(N(x)); [x = x + Cross(N(x), memory)]; x = x + FFN(N(x)).

The mixer and feed-forward come from the recipe registries, so a layer's kind is a config entry.
"""

from __future__ import annotations

import torch
from torch import nn

from frugalformers.models.recipe import MixContext, attention_kwargs, build_ffn, build_mixer, split_aux
from frugalformers.nn.attention import Attention
from frugalformers.nn.norms import make_norm


def _call_ffn(ffn: nn.Module, x: torch.Tensor, ctx: MixContext):
    return split_aux(ffn(x, ctx) if getattr(ffn, "takes_context", False) else ffn(x))


class PostNormLayer(nn.Module):
    def __init__(self, config, i: int, stack: str = "encoder"):
        super().__init__()
        self.mixer = build_mixer(config, i, stack)
        self.mixer_norm = make_norm(config.norm, config.d_model, config.norm_eps)
        self.ffn = build_ffn(config, i, stack)
        self.ffn_norm = make_norm(config.norm, config.d_model, config.norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, ctx: MixContext) -> tuple[torch.Tensor, dict]:
        x = self.mixer_norm(x + self.dropout(self.mixer(x, ctx)))
        f, aux = _call_ffn(self.ffn, x, ctx)
        x = self.ffn_norm(x + self.dropout(f))
        return x, aux


class PreNormLayer(nn.Module):
    def __init__(self, config, i: int, stack: str, cross_attention: bool = False):
        super().__init__()
        self.mixer_norm = make_norm(config.norm, config.d_model, config.norm_eps)
        self.mixer = build_mixer(config, i, stack)
        self.cross_norm = make_norm(config.norm, config.d_model, config.norm_eps) if cross_attention else None
        self.cross = Attention(causal=False, **attention_kwargs(config, "cross")) if cross_attention else None
        self.ffn_norm = make_norm(config.norm, config.d_model, config.norm_eps)
        self.ffn = build_ffn(config, i, stack)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        ctx: MixContext,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        cross_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict]:
        ctx.extras["residual"] = x  # the un-normalised stream, for routers that score it (CoLT5 flag)
        x = x + self.dropout(self.mixer(self.mixer_norm(x), ctx))
        if self.cross is not None:
            h = self.cross(self.cross_norm(x), memory, key_padding_mask=memory_mask, kv=cross_kv)
            x = x + self.dropout(h)
        ctx.extras["residual"] = x
        f, aux = _call_ffn(self.ffn, self.ffn_norm(x), ctx)
        return x + self.dropout(f), aux
