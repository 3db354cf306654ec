"""Model configuration: one dataclass for the three families, validated on construction.

Every wrong value raises a `ValueError` that names the field, the value and what would be valid.

Families:
- `bert`: post-LayerNorm encoder (BERT, FNet, Sparse Mixer), learned absolute positions, token
  types, optional embedding projection d_emb -> d_model (FNet's `hidden_mapping_in`).
- `t5`: pre-RMSNorm encoder-decoder (T5.1.1, LongT5, CoLT5, MoWE), relative position bias, no
  biases, gated-gelu. `n_kv_heads` sets the decoder's self- and cross-attention kv heads (the GQA
  paper converts the decoder only); `cross_n_kv_heads` the cross-attention's alone (CoLT5 makes
  only cross-attention multi-query); `encoder_n_kv_heads` the encoder's (default: n_heads).
- `decoder`: pre-RMSNorm causal LM (Llama style), rotary positions, SwiGLU, GQA.

The per-layer recipe: layer i uses mixer `layer_mixers[i]` (default `mixer`) and feed-forward
`layer_ffns[i]` (default `ffn`), names from the registries in `frugalformers.models.recipe`. A
layout rule may stand for the list: `mixer_layout="attention:TOP:2"` gives 2 attention layers
placed by the official TOP rule and `mixer` everywhere else (FNet-Hybrid), `ffn_layout="moe:MIDDLE:4"`
4 MoE layers in the middle (Sparse Mixer); the rule is applied to whatever `n_layers` is, so
overriding the depth keeps the layout. For T5 the recipe describes the encoder; decoder layers use
`decoder_mixer` / `decoder_ffn`, or `decoder_layer_ffns[i]` per decoder layer (e.g. MoWE's two
decoder word-expert layers).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any

from frugalformers.layout import LAYOUTS, layer_recipe
from frugalformers.options import merge_options, validate_options
from frugalformers.registry import ACTIVATIONS, ATTENTION_IMPLS, FFNS, MIXERS

FAMILIES = ("bert", "t5", "decoder")
HEADS = {
    "bert": ("mlm", "classify", "base"),
    "t5": ("seq2seq", "base", "encoder"),
    "decoder": ("lm",),
}
POSITIONS = {"bert": ("learned",), "t5": ("relative",), "decoder": ("rotary", "learned")}
NORMS = ("layernorm", "rmsnorm")
POOLINGS = ("cls", "mean")


def parse_layout(name: str, value: Any, n_layers: int) -> tuple[str, str, int]:
    """ "attention:TOP:2" -> ("attention", "TOP", 2), checked against n_layers."""
    parts = value.split(":") if isinstance(value, str) else []
    if len(parts) != 3 or not parts[2].isdigit():
        raise ValueError(f"{name}={value!r} must look like BLOCK:LAYOUT:N, e.g. 'attention:TOP:2'")
    block, rule, n = parts[0], parts[1].upper(), int(parts[2])
    _one_of(f"{name} layout", rule, LAYOUTS)
    if not 0 <= n <= n_layers:
        raise ValueError(f"{name}={value!r} asks for {n} layers but n_layers={n_layers}")
    return block, rule, n


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive integer")


def _probability(name: str, value: Any) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name}={value!r} must be a probability in [0, 1)")


def _positive_float(name: str, value: Any) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name}={value!r} must be a positive finite number")


def _one_of(name: str, value: Any, valid: tuple | list) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; use one of {list(valid)}")


@dataclass
class ModelConfig:
    family: str = "bert"
    head: str | None = None  # default: the family's first head (mlm / seq2seq / lm)
    vocab_size: int = 30522
    d_model: int = 768
    n_layers: int = 12
    n_decoder_layers: int | None = None  # t5 only; default n_layers
    n_heads: int = 12
    n_kv_heads: int | None = None  # default n_heads (MHA); 1 = MQA
    encoder_n_kv_heads: int | None = None  # t5 only; default n_heads
    cross_n_kv_heads: int | None = None  # t5 only: the decoder's cross-attention kv heads; default n_kv_heads
    head_dim: int | None = None  # default d_model // n_heads
    d_ff: int = 3072
    activation: str = "gelu"  # gelu | gelu_new | relu | silu
    gated_ffn: bool = False  # gated-gelu (T5.1.1) / SwiGLU (Llama)
    bias: bool = True  # biases in attention and feed-forward projections
    norm: str = "layernorm"
    norm_eps: float = 1e-12
    position: str = "learned"  # learned | relative | rotary
    max_seq_len: int = 512
    type_vocab_size: int = 2  # bert only; FNet uses 4
    d_emb: int | None = None  # embedding width; default d_model
    embedding_projection: bool = False  # FNet: Dense d_emb -> d_model after the embedding LayerNorm
    dropout: float = 0.1
    attention_dropout: float = 0.1
    relative_buckets: int = 32
    relative_max_distance: int = 128
    rope_theta: float = 10000.0
    attention_scale: float | None = None  # default 1/sqrt(head_dim); T5 uses 1.0
    tie_word_embeddings: bool = True
    pooler: bool = True  # bert base / classify heads: Dense + tanh on token 0 (the MLM model has none)
    num_labels: int = 2  # classify head; 1 = regression
    label_names: tuple[str, ...] | None = None  # classify head: the label of each output, in order
    pad_token_id: int = 0
    decoder_start_token_id: int = 0
    init_std: float = 0.02
    mixer: str = "attention"
    ffn: str = "dense"
    layer_mixers: tuple[str, ...] | None = None
    layer_ffns: tuple[str, ...] | None = None
    mixer_layout: str | None = None  # "BLOCK:LAYOUT:N" (frugalformers.layout rules), instead of layer_mixers
    ffn_layout: str | None = None  # "BLOCK:LAYOUT:N", instead of layer_ffns
    decoder_mixer: str = "attention"
    decoder_ffn: str = "dense"
    decoder_layer_ffns: tuple[str, ...] | None = None  # t5 only: one FFN kind per decoder layer
    attention_impl: str = "sdpa"  # sdpa | reference
    classifier_pooling: str = "cls"  # bert classify head: "cls" (token 0, the papers) | "mean" (real tokens)
    prenorm: bool = False  # bert family: pre-LayerNorm layers + a final LayerNorm (the papers: post-LN)
    options: dict[str, Any] = field(default_factory=dict)  # block settings: fields of frugalformers.options

    def __post_init__(self) -> None:
        if isinstance(self.layer_mixers, list):
            self.layer_mixers = tuple(self.layer_mixers)
        if isinstance(self.layer_ffns, list):
            self.layer_ffns = tuple(self.layer_ffns)
        if isinstance(self.decoder_layer_ffns, list):
            self.decoder_layer_ffns = tuple(self.decoder_layer_ffns)
        if isinstance(self.label_names, list):
            self.label_names = tuple(self.label_names)
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        _one_of("family", self.family, FAMILIES)
        if self.head is None:
            self.head = HEADS[self.family][0]
        _one_of(f"head (family {self.family!r})", self.head, HEADS[self.family])
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len", "num_labels"):
            _positive_int(name, getattr(self, name))
        for name in ("n_decoder_layers", "n_kv_heads", "encoder_n_kv_heads", "cross_n_kv_heads", "head_dim", "d_emb"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name))
        if self.family != "t5":
            for name in ("n_decoder_layers", "encoder_n_kv_heads", "cross_n_kv_heads"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}={getattr(self, name)!r} applies to family 't5' only; remove it")
        if self.head_dim is None and self.d_model % self.n_heads:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                f"set head_dim or use n_heads in {[h for h in range(1, 65) if self.d_model % h == 0]}"
            )
        for name in ("n_kv_heads", "encoder_n_kv_heads", "cross_n_kv_heads"):
            g = getattr(self, name)
            if g is not None and self.n_heads % g:
                valid = [d for d in range(1, self.n_heads + 1) if self.n_heads % d == 0]
                raise ValueError(
                    f"n_heads={self.n_heads} is not divisible by {name}={g}: each kv head serves a "
                    f"contiguous group of query heads; use {name} in {valid}"
                )
        _one_of("activation", self.activation, ACTIVATIONS)
        _one_of("norm", self.norm, NORMS)
        _positive_float("norm_eps", self.norm_eps)
        _one_of(f"position (family {self.family!r})", self.position, POSITIONS[self.family])
        if self.position == "rotary" and self.resolved_head_dim % 2:
            raise ValueError(f"head_dim={self.resolved_head_dim} must be even for rotary positions")
        if self.type_vocab_size < 0 or not isinstance(self.type_vocab_size, int):
            raise ValueError(f"type_vocab_size={self.type_vocab_size!r} must be a non-negative integer")
        if self.d_emb is not None and self.d_emb != self.d_model and not self.embedding_projection:
            raise ValueError(
                f"d_emb={self.d_emb} differs from d_model={self.d_model} but embedding_projection=False; "
                f"set embedding_projection=True or d_emb=None"
            )
        if self.embedding_projection and self.family != "bert":
            raise ValueError(f"embedding_projection=True applies to family 'bert' only, not {self.family!r}")
        _probability("dropout", self.dropout)
        _probability("attention_dropout", self.attention_dropout)
        _positive_int("relative_buckets", self.relative_buckets)
        if self.relative_buckets < 4 or self.relative_buckets % 2:
            raise ValueError(f"relative_buckets={self.relative_buckets} must be an even integer >= 4")
        _positive_int("relative_max_distance", self.relative_max_distance)
        if self.relative_max_distance <= self.relative_buckets // 2:
            raise ValueError(
                f"relative_max_distance={self.relative_max_distance} must exceed relative_buckets/2="
                f"{self.relative_buckets // 2} (the exact-offset buckets)"
            )
        _positive_float("rope_theta", self.rope_theta)
        if self.attention_scale is not None:
            _positive_float("attention_scale", self.attention_scale)
        _positive_float("init_std", self.init_std)
        if not isinstance(self.pad_token_id, int) or not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id={self.pad_token_id!r} must be in [0, vocab_size={self.vocab_size})")
        if not isinstance(self.decoder_start_token_id, int) or not 0 <= self.decoder_start_token_id < self.vocab_size:
            raise ValueError(
                f"decoder_start_token_id={self.decoder_start_token_id!r} must be in [0, vocab_size={self.vocab_size})"
            )
        _one_of("attention_impl", self.attention_impl, ATTENTION_IMPLS)
        for name in ("mixer", "decoder_mixer"):
            _one_of(name, getattr(self, name), sorted(MIXERS))
        for name in ("ffn", "decoder_ffn"):
            _one_of(name, getattr(self, name), sorted(FFNS))
        _one_of("classifier_pooling", self.classifier_pooling, POOLINGS)
        if self.label_names is not None and len(self.label_names) != self.num_labels:
            raise ValueError(f"label_names has {len(self.label_names)} names but num_labels={self.num_labels}")
        if self.prenorm and self.family != "bert":
            raise ValueError(
                f"prenorm=True applies to family 'bert' (t5 and decoder are pre-norm already), not {self.family!r}"
            )
        for name, layout, registry in (("layer_mixers", "mixer_layout", MIXERS), ("layer_ffns", "ffn_layout", FFNS)):
            if getattr(self, layout) is not None:
                if getattr(self, name) is not None:
                    raise ValueError(f"give {name} or {layout}, not both ({layout}={getattr(self, layout)!r})")
                special, _, _ = parse_layout(layout, getattr(self, layout), self.n_layers)
                _one_of(f"{layout} block", special, sorted(registry))
            recipe = getattr(self, name)
            if recipe is None:
                continue
            if len(recipe) != self.n_layers:
                raise ValueError(f"{name} has {len(recipe)} entries but n_layers={self.n_layers}; give one per layer")
            for i, entry in enumerate(recipe):
                _one_of(f"{name}[{i}]", entry, sorted(registry))
        if self.decoder_layer_ffns is not None:
            if self.family != "t5":
                raise ValueError(f"decoder_layer_ffns is for the t5 family (its decoder stack), not {self.family!r}")
            if len(self.decoder_layer_ffns) != self.decoder_layers:
                raise ValueError(
                    f"decoder_layer_ffns has {len(self.decoder_layer_ffns)} entries but the decoder has "
                    f"{self.decoder_layers} layers; give one per decoder layer"
                )
            for i, entry in enumerate(self.decoder_layer_ffns):
                _one_of(f"decoder_layer_ffns[{i}]", entry, sorted(FFNS))
        validate_options(self.options)

    # ------------------------------------------------------------------ derived values
    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @property
    def cross_kv_heads(self) -> int:
        """kv heads of a T5 decoder's cross-attention (CoLT5: 1, multi-query; self-attention keeps its own)."""
        return self.cross_n_kv_heads if self.cross_n_kv_heads is not None else self.kv_heads

    @property
    def encoder_kv_heads(self) -> int:
        """kv heads of the encoder stack (t5) or of the only stack (bert, decoder)."""
        if self.family == "t5":
            return self.encoder_n_kv_heads if self.encoder_n_kv_heads is not None else self.n_heads
        return self.kv_heads

    @property
    def embedding_dim(self) -> int:
        return self.d_emb if self.d_emb is not None else self.d_model

    @property
    def decoder_layers(self) -> int:
        return self.n_decoder_layers if self.n_decoder_layers is not None else self.n_layers

    def mixers(self) -> tuple[str, ...]:
        """Every (encoder) layer's mixer: `layer_mixers`, or the `mixer_layout` rule, or `mixer`."""
        return self._per_layer(self.layer_mixers, self.mixer_layout, self.mixer, "mixer_layout")

    def ffns(self) -> tuple[str, ...]:
        """Every (encoder) layer's feed-forward: `layer_ffns`, or the `ffn_layout` rule, or `ffn`."""
        return self._per_layer(self.layer_ffns, self.ffn_layout, self.ffn, "ffn_layout")

    def _per_layer(self, explicit, layout, base: str, name: str) -> tuple[str, ...]:
        if explicit is not None:
            return tuple(explicit)
        if layout is None:
            return (base,) * self.n_layers
        special, rule, n = parse_layout(name, layout, self.n_layers)
        return layer_recipe(self.n_layers, base, special, n, rule)

    def layer_mixer(self, i: int) -> str:
        return self.mixers()[i]

    def layer_ffn(self, i: int) -> str:
        return self.ffns()[i]

    def decoder_layer_ffn(self, i: int) -> str:
        return self.decoder_layer_ffns[i] if self.decoder_layer_ffns is not None else self.decoder_ffn

    def routes_words(self) -> bool:
        """MoWE layers in the (encoder) stack: they read the input words' routing ids."""
        return "word_experts" in self.ffns()

    def routes_decoder_words(self) -> bool:
        """MoWE layers in a T5 decoder: routed by the decoder inputs' causal routing ids."""
        return self.family == "t5" and "word_experts" in (self.decoder_layer_ffns or (self.decoder_ffn,))

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("layer_mixers", "layer_ffns", "decoder_layer_ffns", "label_names"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        _check_keys(d)
        return cls(**d)

    def architecture_differences(self, other: ModelConfig, shapes_only: bool = False) -> list[str]:
        """'field: mine vs other' for each architectural field that differs (the blocks, widths and
        depths weights depend on; not dropout, heads on top or implementation choices). With
        `shapes_only`, vocab_size and max_seq_len (set from the data) are left out."""
        fields = [
            "family", "d_model", "n_layers", "decoder_layers", "n_heads", "kv_heads", "encoder_kv_heads",
            "cross_kv_heads", "resolved_head_dim", "d_ff", "activation", "gated_ffn", "bias", "norm", "position",
            "type_vocab_size", "embedding_dim", "embedding_projection", "prenorm", "tie_word_embeddings",
        ]  # fmt: skip
        if not shapes_only:
            fields += ["vocab_size", "max_seq_len"]
        out = [
            f"{f}: {getattr(self, f)!r} vs {getattr(other, f)!r}"
            for f in fields
            if getattr(self, f) != getattr(other, f)
        ]
        for name, mine, theirs in (("mixers", self.mixers(), other.mixers()), ("ffns", self.ffns(), other.ffns())):
            if mine != theirs:
                out.append(f"{name}: {list(mine)} vs {list(theirs)}")
        return out

    def replace(self, **overrides: Any) -> ModelConfig:
        """A new validated config with `overrides` applied; unknown keys are an error."""
        _check_keys(overrides)
        if isinstance(overrides.get("options"), dict):  # key by key into the preset's options
            overrides = {**overrides, "options": merge_options(self.options, overrides["options"])}
        return dataclasses.replace(self, **overrides)


def _check_keys(d: dict[str, Any]) -> None:
    names = [f.name for f in dataclasses.fields(ModelConfig)]
    for key in d:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3)
            hint = f"; did you mean {close}?" if close else f"; valid fields are {names}"
            raise ValueError(f"unknown config field {key!r}{hint}")
