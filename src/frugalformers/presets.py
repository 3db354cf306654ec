"""Named sizes. Each full-size preset has a `-tiny` sibling (same family and recipe, a few thousand
times smaller) for tests and the demo; tiny vocabularies are 8192, the size of the tiny tokenizer."""

from __future__ import annotations

import difflib
from collections.abc import Callable

from frugalformers.config import ModelConfig

PRESETS: dict[str, Callable[[], ModelConfig]] = {}
DESCRIPTIONS: dict[str, str] = {}

TINY_VOCAB = 8192


def register_preset(name: str, description: str):
    def deco(fn: Callable[[], ModelConfig]):
        PRESETS[name] = fn
        DESCRIPTIONS[name] = description
        return fn

    return deco


def get_preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        close = difflib.get_close_matches(name, list(PRESETS), n=3)
        hint = f"did you mean {close}? " if close else ""
        raise ValueError(f"unknown preset {name!r}; {hint}run `frugal models` to list them: {sorted(PRESETS)}")
    return PRESETS[name]()


# the official Sparse Mixer Small shape (8 x 512, 8 heads, FFN 2048): the size `recipes/fnet-small.yaml`
# compares BERT, FNet and Sparse Mixer at (BERT's 8 x 512 is the BERT-Medium of Turc et al. 2019)
_SMALL = dict(d_model=512, n_layers=8, n_heads=8, d_ff=2048)


# ---------------------------------------------------------------- BERT family (Devlin et al. 2019)
def _bert(**kw) -> ModelConfig:
    base = dict(family="bert", activation="gelu", norm="layernorm", norm_eps=1e-12, position="learned")
    return ModelConfig(**{**base, **kw})


@register_preset("bert-base", "BERT-Base: 12 x 768, FFN 3072, 12 heads (~110M)")
def _bert_base():
    return _bert(d_model=768, n_layers=12, n_heads=12, d_ff=3072)


@register_preset("bert-large", "BERT-Large: 24 x 1024, FFN 4096, 16 heads (~335M)")
def _bert_large():
    return _bert(d_model=1024, n_layers=24, n_heads=16, d_ff=4096)


@register_preset("bert-small", "BERT at the Sparse Mixer Small shape: 8 x 512, FFN 2048, 8 heads (~41M)")
def _bert_small():
    return _bert(**_SMALL)


@register_preset("bert-tiny", "tiny BERT for tests and the demo: 2 x 64, 4 heads")
def _bert_tiny():
    return _bert(vocab_size=TINY_VOCAB, d_model=64, n_layers=2, n_heads=4, d_ff=256, max_seq_len=128)


# ---------------------------------------------------------------- FNet (Lee-Thorp et al. 2021)
def _fnet(**kw) -> ModelConfig:
    # official f_net config: post-LN eps 1e-12, gelu (tanh form), 4 token types, the d_emb -> d_model
    # projection even when the sizes are equal, Fourier mixing in every layer
    base = dict(
        family="bert",
        activation="gelu_new",
        norm="layernorm",
        norm_eps=1e-12,
        position="learned",
        type_vocab_size=4,
        embedding_projection=True,
        mixer="fourier",
        pad_token_id=3,
    )
    return ModelConfig(**{**base, **kw})


_FNET_BASE = dict(vocab_size=32000, d_model=768, n_layers=12, n_heads=12, d_ff=3072)
_FNET_LARGE = dict(vocab_size=32000, d_model=1024, n_layers=24, n_heads=16, d_ff=4096)
_FNET_TINY = dict(vocab_size=TINY_VOCAB, d_model=64, n_layers=2, n_heads=4, d_ff=256, max_seq_len=128)


def _hybrid(shape: dict, n_attention: int = 2, layout: str = "TOP", mixer: str = "fourier") -> ModelConfig:
    # FNet-Hybrid: the paper's best layout puts 2 self-attention layers at the TOP (notes 1.3, 1.5)
    return _fnet(mixer=mixer, mixer_layout=f"attention:{layout}:{n_attention}", **shape)


for _size, _shape, _what in (
    ("base", _FNET_BASE, "12 x 768, FFN 3072"),
    ("large", _FNET_LARGE, "24 x 1024, FFN 4096"),
    ("small", {**_SMALL, "vocab_size": 32000}, "8 x 512, FFN 2048 (the Sparse Mixer Small shape)"),
    ("tiny", _FNET_TINY, "2 x 64 (tests and the demo)"),
):
    register_preset(f"fnet-{_size}", f"FNet-{_size.title()}: {_what}, Fourier mixing")(lambda s=_shape: _fnet(**s))
    register_preset(f"fnet-hybrid-{_size}", f"FNet-Hybrid-{_size.title()}: {_what}, Fourier + attention in the top 2")(
        lambda s=_shape: _hybrid(s, n_attention=min(2, s["n_layers"] // 2 or 1))
    )
    for _mixer, _label in (("linear", "Linear"), ("random", "Random"), ("identity", "FF-only")):
        register_preset(
            f"{_label.lower()}-{_size}", f"{_label}-{_size.title()} (FNet ablation): {_what}, {_mixer} mixing"
        )(lambda s=_shape, m=_mixer: _fnet(mixer=m, **s))


# ---------------------------------------------------------------- Sparse Mixer (Lee-Thorp & Ainslie 2022)
def _sparse_mixer(
    n_layers: int,
    d_model: int,
    n_heads: int,
    d_ff: int,
    n_experts: int,
    cf: float,
    vocab: int,
    max_seq_len: int,
    n_special: int,
) -> ModelConfig:
    # official sparse_mixers/configs/base.py: Linear mixing, attention in the TOP layers, MoE in the
    # MIDDLE layers, experts-choose routing; embeddings, pooler and MLM head as in FNet
    return _fnet(
        vocab_size=vocab,
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        d_ff=d_ff,
        max_seq_len=max_seq_len,
        mixer="linear",
        mixer_layout=f"attention:TOP:{n_special}",
        ffn_layout=f"moe:MIDDLE:{n_special}",
        options={"n_experts": n_experts, "routing": "experts_choose", "capacity_factor": cf, "expert_dropout": 0.1},
    )


register_preset("sparse-mixer-base", "Sparse Mixer Base: 14 x 512, Linear mixing, attention 10-13, 16-expert MoE 5-8")(
    lambda: _sparse_mixer(14, 512, 8, 2048, 16, 1.0, 32000, 512, 4)
)
register_preset("fast-sparse-mixer-base", "Fast Sparse Mixer Base: Sparse Mixer Base with capacity factor 0.5")(
    lambda: _sparse_mixer(14, 512, 8, 2048, 16, 0.5, 32000, 512, 4)
)
register_preset("sparse-mixer-small", "Sparse Mixer Small: 8 x 512, attention top 4, 16-expert MoE middle 4")(
    lambda: _sparse_mixer(8, 512, 8, 2048, 16, 1.0, 32000, 512, 4)
)
register_preset("fast-sparse-mixer-small", "Fast Sparse Mixer Small: Sparse Mixer Small with capacity factor 0.5")(
    lambda: _sparse_mixer(8, 512, 8, 2048, 16, 0.5, 32000, 512, 4)
)
register_preset("fast-sparse-mixer-tiny", "tiny Fast Sparse Mixer: sparse-mixer-tiny with capacity factor 0.5")(
    lambda: _sparse_mixer(4, 64, 4, 256, 4, 0.5, TINY_VOCAB, 128, 2)
)
register_preset("sparse-mixer-tiny", "tiny Sparse Mixer: 4 x 64, attention in layers 2-3, 4-expert MoE in layers 1-2")(
    lambda: _sparse_mixer(4, 64, 4, 256, 4, 1.0, TINY_VOCAB, 128, 2)
)


# ---------------------------------------------------------------- T5.1.1 (Raffel et al. 2020)
def _t5(**kw) -> ModelConfig:
    base = dict(
        family="t5",
        activation="gelu_new",
        gated_ffn=True,
        bias=False,
        norm="rmsnorm",
        norm_eps=1e-6,
        position="relative",
        attention_scale=1.0,
        tie_word_embeddings=False,
        attention_dropout=0.0,
        max_seq_len=16384,
    )
    return ModelConfig(**{**base, **kw})


@register_preset("t5-base", "T5.1.1-Base encoder-decoder: 12+12 x 768, gated-gelu FFN 2048, 12 heads (~248M)")
def _t5_base():
    return _t5(vocab_size=32128, d_model=768, n_layers=12, n_heads=12, head_dim=64, d_ff=2048)


@register_preset("t5-tiny", "tiny T5.1.1 for tests: 2+2 x 64, 4 heads of 16")
def _t5_tiny():
    return _t5(vocab_size=TINY_VOCAB, d_model=64, n_layers=2, n_heads=4, head_dim=16, d_ff=128, max_seq_len=1024)


# ---------------------------------------------------------------- LongT5 / CoLT5 (Ainslie et al. 2023)
def _colt5(conditional: bool, light_heads: int | None = None, **shape) -> ModelConfig:
    # CoLT5: every encoder layer light (local attention, radius 127, 1/4 heads; FFN d_ff/2) + heavy
    # (routed attention m queries -> 2m keys/values, 3/4 heads; FFN 4 d_ff on m tokens), m = n/16;
    # multi-query cross-attention in the decoder, its self-attention multi-head (Table 7, section 3).
    # LongT5: local attention, or transient-global attention (LongT5's long-input default and the
    # paper's baseline) with tglobal=True. Every local window has LongT5's relative bias (the stack's),
    # the heavy branch a relative bias of its own; the router solver is the closed form of the paper's
    # coordinate descent (the same weights where it converges, without ~250 ms of 50 small iterations).
    options = {"local_radius": shape.pop("radius", 127)}
    if shape.pop("tglobal", False):
        return _t5(mixer="transient_global", options={**options, "global_block": 16}, **shape)
    if conditional:
        options.update(routed_tokens=shape.pop("routed", 1 / 16), light_heads=light_heads, router_solver="exact")
        return _t5(mixer="routed_attention", ffn="routed", cross_n_kv_heads=1, options=options, **shape)
    return _t5(mixer="local_attention", options=options, **shape)


_T5_BASE = dict(vocab_size=32128, d_model=768, n_layers=12, n_heads=12, head_dim=64, d_ff=2048)
_T5_LARGE = dict(vocab_size=32128, d_model=1024, n_layers=24, n_heads=16, head_dim=64, d_ff=2816)
_T5_TINY = dict(vocab_size=TINY_VOCAB, d_model=64, n_layers=2, n_heads=4, head_dim=16, d_ff=128, max_seq_len=16384)
# T5.1.1-Small's shape (8+8 x 512, 6 heads of 64, gated FFN 1024), for recipes/colt5-small.yaml
_T5_SMALL = dict(vocab_size=32128, d_model=512, n_layers=8, n_heads=6, head_dim=64, d_ff=1024, max_seq_len=32768)

register_preset("longt5-local-base", "LongT5-Base encoder with local attention (radius 127) only; T5.1.1 decoder")(
    lambda: _colt5(False, **_T5_BASE)
)
register_preset(
    "longt5-base",
    "LongT5-TGlobal-Base: transient-global attention (radius 127, a global token per 16-token block); "
    "the CoLT5 paper's baseline",
)(lambda: _colt5(False, tglobal=True, **_T5_BASE))
register_preset("longt5-tiny", "tiny LongT5-TGlobal for tests: radius 15, global blocks of 16")(
    lambda: _colt5(False, radius=15, tglobal=True, **_T5_TINY)
)
register_preset(
    "colt5-base",
    "CoLT5-Base: light local + heavy routed attention (4 + 8 heads), FFN 1024 + 8192 "
    "on n/16 routed tokens, MQA cross-attention",
)(lambda: _colt5(True, 4, **_T5_BASE))
register_preset("colt5-large", "CoLT5-Large: 24+24 x 1024, heads 4 light + 12 heavy, FFN 1408 + 11264")(
    lambda: _colt5(True, 4, **_T5_LARGE)
)
register_preset("longt5-small", "LongT5-TGlobal at T5.1.1-Small's shape: 8+8 x 512, 6 heads, FFN 1024")(
    lambda: _colt5(False, tglobal=True, **_T5_SMALL)
)
register_preset(
    "colt5-small",
    "CoLT5 at T5.1.1-Small's shape: heads 2 light + 4 heavy (Base's 1/3 light), FFN 512 + 4096 on n/16 routed tokens",
)(lambda: _colt5(True, 2, **_T5_SMALL))
register_preset("longt5-local-tiny", "tiny LongT5 (local attention, radius 15) for tests")(
    lambda: _colt5(False, radius=15, **_T5_TINY)
)
register_preset("colt5-tiny", "tiny CoLT5 for tests: radius 15, 1/8 of the tokens routed")(
    lambda: _colt5(True, 1, radius=15, routed=1 / 8, **_T5_TINY)
)


# ---------------------------------------------------------------- MoWE (dos Santos et al. 2023)
register_preset(
    "mowe-base",
    "MoWE-Base: T5.1.1-Base whose encoder and decoder blocks 5 and 10 are word-expert layers (the paper's 2 + 2) "
    "sharing one bf16 bank of 32768 experts (d_e 64, 3.2B sparse parameters, row-sparse gradients); decoder tokens "
    "route by causal word ids",
)(
    lambda: _t5(
        **_T5_BASE,
        layer_ffns=tuple("word_experts" if i in (4, 9) else "dense" for i in range(12)),
        decoder_layer_ffns=tuple("word_experts" if i in (4, 9) else "dense" for i in range(12)),
        # a bf16 bank with row-sparse gradients: the layer reads half the bytes and writes the gradient of the
        # touched experts only (benchmarks/mowe.py); float32 master weights live in the optimizer
        options={
            "mowe_experts": 32768,
            "mowe_d_expert": 64,
            "mowe_skip_top": 16,
            "mowe_bank_dtype": "bfloat16",
            "mowe_sparse_grad": True,
        },  # fmt: skip
    )
)
register_preset(
    "switch-base",
    "Switch-style T5.1.1-Base, the MoE baseline for MoWE-Base: encoder blocks 5 and 10 are tokens-choose top-1 "
    "MoE layers (capacity 1.25) of 336 experts with d_ff 2048 (3.2B sparse parameters, as MoWE-Base's bank)",
)(
    lambda: _t5(
        **_T5_BASE,
        layer_ffns=tuple("moe" if i in (4, 9) else "dense" for i in range(12)),
        options={"n_experts": 336, "routing": "tokens_choose", "capacity_factor": 1.25, "expert_dropout": 0.0},
    )
)
# The knowledge study at T5.1.1-Small's shape (recipes/mowe-small.yaml): word experts or Switch experts in
# encoder and decoder blocks 4 and 7 of 8 (0-based 3, 6; MoWE-Base's 5 and 10 of 12, scaled), everything
# else as t5-small. MoWE: 8,192 experts of d_e 64 (the paper's 32K experts for a 1M-word routing vocabulary
# is ~30 words per expert; the corpus tokenizer's 184K words over 8K experts is ~22), 537M sparse
# parameters. Switch: 85 top-1 experts per layer of the dense FFN's size (4 x 85 x 1.57M = 535M; the MoE
# layers do not share experts), capacity 1.25, so it has T5's
# FLOPs per token; MoWE has fewer (its 4 layers cost 2 x 512 x 64 per routed token instead of
# 3 x 512 x 1024).
_SMALL_EXPERT_BLOCKS = tuple("{}" if i in (3, 6) else "dense" for i in range(8))


def _t5_small_with(kind: str, options: dict) -> ModelConfig:
    ffns = tuple(f.format(kind) for f in _SMALL_EXPERT_BLOCKS)
    return _t5(**{**_T5_SMALL, "max_seq_len": 1024}, layer_ffns=ffns, decoder_layer_ffns=ffns, options=options)


register_preset("t5-small", "T5.1.1-Small encoder-decoder: 8+8 x 512, gated-gelu FFN 1024, 6 heads of 64")(
    lambda: _t5(**{**_T5_SMALL, "max_seq_len": 1024})
)
register_preset(
    "mowe-small",
    "MoWE at T5.1.1-Small's shape: encoder and decoder blocks 4 and 7 share one bank of 8,192 word experts "
    "(d_e 64, bf16, row-sparse gradients)",
)(
    lambda: _t5_small_with(
        "word_experts",
        {
            "mowe_experts": 8192,
            "mowe_d_expert": 64,
            "mowe_skip_top": 16,
            "mowe_bank_dtype": "bfloat16",
            "mowe_sparse_grad": True,
        },
    )
)
register_preset(
    "switch-small",
    "Switch-style T5.1.1-Small, MoWE-Small's MoE baseline: encoder and decoder blocks 4 and 7 are top-1 MoE "
    "layers of 85 experts each (d_ff 1024, capacity 1.25; 535M sparse parameters, as MoWE-Small's bank)",
)(
    lambda: _t5_small_with(
        "moe", {"n_experts": 85, "routing": "tokens_choose", "capacity_factor": 1.25, "expert_dropout": 0.0}
    )
)
register_preset("switch-tiny", "tiny Switch-style T5 for tests: the 2nd encoder FFN is an 8-expert top-1 MoE")(
    lambda: _t5(
        **{**_T5_TINY, "n_layers": 2},
        layer_ffns=("dense", "moe"),
        options={"n_experts": 8, "routing": "tokens_choose", "capacity_factor": 1.25, "expert_dropout": 0.0},
    )
)
register_preset(
    "mowe-tiny", "tiny MoWE: T5.1.1 tiny whose 2nd encoder and 2nd decoder FFN share a 1024-word-expert bank (d_e 16)"
)(
    lambda: _t5(
        **{**_T5_TINY, "n_layers": 2},
        layer_ffns=("dense", "word_experts"),
        decoder_layer_ffns=("dense", "word_experts"),
        options={"mowe_experts": 1024, "mowe_d_expert": 16, "mowe_skip_top": 16, "mowe_sparse_grad": True},
    )
)


# ---------------------------------------------------------------- Llama-shaped decoders (1B class)
def _llama(**kw) -> ModelConfig:
    base = dict(
        family="decoder",
        activation="silu",
        gated_ffn=True,
        bias=False,
        norm="rmsnorm",
        norm_eps=1e-5,
        position="rotary",
        tie_word_embeddings=False,
        dropout=0.0,
        attention_dropout=0.0,
        pad_token_id=0,
    )
    return ModelConfig(**{**base, **kw})


_LLAMA_1B = dict(vocab_size=32000, d_model=2048, n_layers=16, n_heads=16, d_ff=5632, max_seq_len=16384)
_LLAMA_SMALL = dict(vocab_size=32000, d_model=512, n_layers=8, n_heads=8, d_ff=1408, max_seq_len=4096)
_LLAMA_TINY = dict(vocab_size=TINY_VOCAB, d_model=64, n_layers=2, n_heads=8, d_ff=176, max_seq_len=512)

register_preset(
    "llama-small", "Llama-shaped small decoder (recipes/gqa-small.yaml): 8 x 512, SwiGLU 1408, 8 heads, MHA (8 kv)"
)(lambda: _llama(**_LLAMA_SMALL))

# (kv heads of the 1B, kv heads of the tiny with 8 query heads, suffix, description)
_KV_FORMS = ((16, 8, "", "MHA"), (4, 4, "-gqa4", "GQA-4"), (1, 1, "-mqa", "MQA"))
for _kv, _tiny_kv, _suffix, _what in _KV_FORMS:
    register_preset(
        f"llama-1b{_suffix}", f"Llama-shaped 1B decoder: 16 x 2048, SwiGLU 5632, 16 heads, {_what} ({_kv} kv)"
    )(lambda kv=_kv: _llama(n_kv_heads=kv, **_LLAMA_1B))
    register_preset(f"llama-tiny{_suffix}", f"tiny Llama-shaped decoder: 2 x 64, 8 heads, {_what} ({_tiny_kv} kv)")(
        lambda kv=_tiny_kv: _llama(n_kv_heads=kv, **_LLAMA_TINY)
    )
