"""The per-layer recipe: registries of token mixers and feed-forwards that a stack builds from.

A model stack asks `build_mixer(config, i, stack)` and `build_ffn(config, i, stack)` for layer i;
later blocks (Fourier mixing, MoE, routed CoLT5 branches, word experts) register themselves here
under a name and become available to every family without copying a stack.

Interfaces inside a stack:
- a mixer is called `mixer(x, ctx)` with x (B, T, d) and a `MixContext`, returning (B, T, d);
- a feed-forward is called `ffn(x)` (or `ffn(x, ctx)` if it sets `takes_context = True`) and
  returns (B, T, d) or `((B, T, d), {name: aux_loss})`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from frugalformers.nn.attention import Attention, KVCache
from frugalformers.nn.ffn import FeedForward
from frugalformers.nn.local_attention import LocalAttention
from frugalformers.nn.mixing import FourierMixing, IdentityMixing, LinearMixing, RandomMixing
from frugalformers.nn.moe import MoEFeedForward
from frugalformers.nn.routed import RoutedAttention, RoutedFeedForward
from frugalformers.nn.transient_global import TransientGlobalAttention
from frugalformers.nn.word_experts import WordExpertBank, WordExperts
from frugalformers.options import (
    LocalAttentionOptions,
    MixingOptions,
    MoEOptions,
    RoutedOptions,
    WordExpertOptions,
    block_options,
)
from frugalformers.registry import FFNS, MIXERS, builder, register_ffn, register_mixer  # noqa: F401

STACKS = ("encoder", "decoder")


@dataclass
class MixContext:
    """What a token mixer may need besides its input; blocks ignore what they do not use.

    key_padding_mask: (B, S) bool, True for real tokens. attn_bias: (1|B, H, T, S) additive.
    rope: (cos, sin) for the query positions. input_pos: (T,) cache positions when decoding.
    token_ids: (B, T) input ids (for blocks routed by token, e.g. word experts).
    """

    key_padding_mask: torch.Tensor | None = None
    attn_bias: torch.Tensor | None = None
    rope: tuple[torch.Tensor, torch.Tensor] | None = None
    input_pos: torch.Tensor | None = None
    token_ids: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)


def build_mixer(config, i: int, stack: str) -> nn.Module:
    name = config.layer_mixer(i) if stack == "encoder" else config.decoder_mixer
    return builder(MIXERS, "mixer", name)(config, i, stack)


def build_ffn(config, i: int, stack: str) -> nn.Module:
    name = config.layer_ffn(i) if stack == "encoder" else config.decoder_layer_ffn(i)
    return builder(FFNS, "ffn", name)(config, i, stack)


def split_aux(out) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """A block's output as (tensor, aux-loss dict)."""
    if isinstance(out, tuple):
        return out[0], out[1]
    return out, {}


class SelfAttentionMixer(Attention):
    """`Attention` called as a stack mixer: reads masks, bias, rotary and cache from the context.

    `kv_cache` is set by the model's `setup_cache` (a static cache used when the context carries
    `input_pos`) and removed by `clear_cache`.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.kv_cache: KVCache | None = None

    def forward(self, x: torch.Tensor, ctx: MixContext | None = None) -> torch.Tensor:  # type: ignore[override]
        ctx = ctx or MixContext()
        use_cache = ctx.input_pos is not None and self.kv_cache is not None
        return super().forward(
            x,
            key_padding_mask=ctx.key_padding_mask,
            attn_bias=ctx.attn_bias,
            rope=ctx.rope,
            kv_cache=self.kv_cache if use_cache else None,
            input_pos=ctx.input_pos if use_cache else None,
        )


def attention_kwargs(config, stack: str) -> dict:
    """Constructor arguments of a family's attention for `stack` ("encoder", "decoder", or "cross":
    a T5 decoder's cross-attention)."""
    n_kv = {"encoder": config.encoder_kv_heads, "cross": config.cross_kv_heads}.get(stack, config.kv_heads)
    return dict(
        d_model=config.d_model,
        n_heads=config.n_heads,
        n_kv_heads=n_kv,
        head_dim=config.resolved_head_dim,
        bias=config.bias,
        dropout=config.attention_dropout,
        scale=config.attention_scale,
        impl=config.attention_impl,
    )


@register_mixer("attention")
def _attention(config, i: int, stack: str) -> nn.Module:
    causal = config.family == "decoder" or stack == "decoder"
    return SelfAttentionMixer(causal=causal, **attention_kwargs(config, stack))


@register_mixer("fourier")
def _fourier(config, i: int, stack: str) -> nn.Module:
    o = block_options(config.options, MixingOptions)
    return FourierMixing(impl=o.fourier_impl, padding=o.mixing_padding)


@register_mixer("linear")
def _linear(config, i: int, stack: str) -> nn.Module:
    return LinearMixing(config.max_seq_len, config.d_model, block_options(config.options, MixingOptions).mixing_padding)


@register_mixer("random")
def _random(config, i: int, stack: str) -> nn.Module:
    padding = block_options(config.options, MixingOptions).mixing_padding
    return RandomMixing(config.max_seq_len, config.d_model, padding, seed=i)


@register_mixer("identity")
def _identity(config, i: int, stack: str) -> nn.Module:
    return IdentityMixing()


@register_ffn("moe")
def _moe(config, i: int, stack: str) -> nn.Module:
    o = asdict(block_options(config.options, MoEOptions))
    return MoEFeedForward(
        config.d_model, config.d_ff, activation=config.activation, gated=config.gated_ffn, bias=config.bias, **o
    )


def _windowed(cls, config, stack: str, *extra) -> nn.Module:
    """A local-window attention `cls(d_model, n_heads, radius, *extra, ...)` with the stack's
    attention settings (no attention dropout: the windowed paths take none)."""
    kw = attention_kwargs(config, stack)
    kw.pop("dropout")
    radius = block_options(config.options, LocalAttentionOptions).local_radius
    return cls(kw.pop("d_model"), kw.pop("n_heads"), radius, *extra, **kw)


@register_mixer("local_attention")
def _local(config, i: int, stack: str) -> nn.Module:
    """LongT5-style local attention, radius 127 (options: local_radius)."""

    return _windowed(LocalAttention, config, stack)


@register_mixer("transient_global")
def _transient_global(config, i: int, stack: str) -> nn.Module:
    """LongT5 transient-global attention: local (radius 127) + one global token per 16-token block
    (options: local_radius, global_block). Its relative biases belong to the T5 stack."""

    block = block_options(config.options, LocalAttentionOptions).global_block
    return _windowed(TransientGlobalAttention, config, stack, block)


def light_heads(config) -> int:
    """CoLT5's light (local) attention heads: options.light_heads, or a quarter of the heads (r_L = 1/4)."""
    return block_options(config.options, RoutedOptions).light_heads or max(1, config.n_heads // 4)


@register_mixer("routed_attention")
def _routed_attention(config, i: int, stack: str) -> nn.Module:
    """CoLT5 conditional attention: 1/4 of the heads light (local, with the stack's LongT5 local bias),
    3/4 heavy (routed). Options for the choices the paper leaves open: heavy_position_bias (True: a
    T5 relative bias over the routed tokens' positions, as every LongT5 attention has one),
    router_input ("normalized" | "residual"), router_straight_through (False), router_solver ("exact":
    the closed-form fixed point of the paper's 50-step coordinate descent, which tests hold equal to
    it; "iterative" runs the descent); see `nn.routed.RoutedAttention`."""

    o = block_options(config.options, RoutedOptions)
    light = light_heads(config)
    return RoutedAttention(
        config.d_model,
        light,
        o.heavy_heads or config.n_heads - light,
        config.resolved_head_dim,
        radius=block_options(config.options, LocalAttentionOptions).local_radius,
        routed=o.routed_tokens,
        kv_factor=o.kv_factor,
        bias=config.bias,
        scale=config.attention_scale,
        eps=o.router_eps,
        iters=o.router_iters,
        train_k_factor=o.router_train_k_factor,
        impl=config.attention_impl,
        heavy_position_bias=o.heavy_position_bias,
        router_input=o.router_input,
        straight_through=o.router_straight_through,
        solver=o.router_solver,
        relative_buckets=config.relative_buckets,
        relative_max_distance=config.relative_max_distance,
    )


@register_ffn("routed")
def _routed(config, i: int, stack: str) -> nn.Module:
    """CoLT5 conditional FFN: light d_ff/2 on all tokens, heavy 4*d_ff on the routed ones (section 3.1)."""

    o = block_options(config.options, RoutedOptions)
    return RoutedFeedForward(
        config.d_model,
        o.light_d_ff or config.d_ff // 2,
        o.heavy_d_ff or 4 * config.d_ff,
        routed=o.routed_tokens,
        activation=config.activation,
        gated=config.gated_ffn,
        bias=config.bias,
        dropout=config.dropout if config.family == "t5" else 0.0,
        eps=o.router_eps,
        iters=o.router_iters,
        train_k_factor=o.router_train_k_factor,
        router_input=o.router_input,
        straight_through=o.router_straight_through,
        solver=o.router_solver,
    )


@register_ffn("word_experts")
def _word_experts(config, i: int, stack: str) -> nn.Module:
    """MoWE layer; its expert bank is attached by `share_word_expert_bank` (one per model)."""

    return WordExperts(None, skip_top=block_options(config.options, WordExpertOptions).mowe_skip_top)


def share_word_expert_bank(model: nn.Module, config) -> None:
    """Give every MoWE layer of `model` the same expert bank (the paper shares one across layers).
    Options: mowe_experts (default 32768), mowe_d_expert (64), mowe_bank_dtype ("float32" or
    "bfloat16"), mowe_sparse_grad (row-sparse bank gradients, default False)."""

    layers = [m for m in model.modules() if isinstance(m, WordExperts)]
    if layers:
        o = block_options(config.options, WordExpertOptions)
        bank = WordExpertBank(
            o.mowe_experts,
            config.d_model,
            o.mowe_d_expert,
            config.activation,
            dtype=o.mowe_bank_dtype,
            sparse_grad=o.mowe_sparse_grad,
        )
        for layer in layers:
            layer.bank = bank


@register_ffn("dense")
def _dense(config, i: int, stack: str) -> nn.Module:
    # T5 applies dropout to the hidden activations; BERT / Llama only on the residual branch
    inner_dropout = config.dropout if config.family == "t5" else 0.0
    return FeedForward(config.d_model, config.d_ff, config.activation, config.gated_ffn, config.bias, inner_dropout)
