"""Hugging Face interop: configs and weight names of `BertModel`, `T5Model` and `LlamaForCausalLM`.

The name mappings are regex rules from our state-dict names to Hugging Face's, one table per
family; import and export both use them, so a round trip is exact by construction. Tied or
duplicated HF tensors (T5's per-stack `embed_tokens`, BERT's MLM decoder) are checked to equal
their source on import and written back on export.

`transformers` is only needed by `from_hf_model` / `to_hf_model`; the state-dict functions work
on plain dicts (e.g. read from a `model.safetensors` file).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from frugalformers.checkpoint import CheckpointError, load_state_strict
from frugalformers.config import ModelConfig

# ----------------------------------------------------------------------------- name rules
# (regex over our names, template of HF names); {0},{1}.. are the regex groups.
_BERT_LAYER = [
    (r"mixer\.q\.", "attention.self.query."),
    (r"mixer\.k\.", "attention.self.key."),
    (r"mixer\.v\.", "attention.self.value."),
    (r"mixer\.o\.", "attention.output.dense."),
    (r"mixer_norm\.", "attention.output.LayerNorm."),
    (r"ffn\.w_in\.", "intermediate.dense."),
    (r"ffn\.w_out\.", "output.dense."),
    (r"ffn_norm\.", "output.LayerNorm."),
]
_BERT_BODY = [
    (r"embeddings\.word\.", "embeddings.word_embeddings."),
    (r"embeddings\.position\.", "embeddings.position_embeddings."),
    (r"embeddings\.token_type\.", "embeddings.token_type_embeddings."),
    (r"embeddings\.norm\.", "embeddings.LayerNorm."),
    (r"embeddings\.projection\.", "embeddings.projection."),
    (r"pooler\.", "pooler.dense."),
] + [(r"layers\.(\d+)\." + o, "encoder.layer.{0}." + h) for o, h in _BERT_LAYER]
_FNET_LAYER = [
    (r"mixer_norm\.", "fourier.output.LayerNorm."),
    (r"ffn\.w_in\.", "intermediate.dense."),
    (r"ffn\.w_out\.", "output.dense."),
    (r"ffn_norm\.", "output.LayerNorm."),
]
_FNET_BODY = _BERT_BODY[:6] + [(r"layers\.(\d+)\." + o, "encoder.layer.{0}." + h) for o, h in _FNET_LAYER]
_BERT_HEADS = [
    (r"mlm\.dense\.", "cls.predictions.transform.dense."),
    (r"mlm\.norm\.", "cls.predictions.transform.LayerNorm."),
    (r"mlm\.bias$", "cls.predictions.bias"),
    (r"mlm\.decoder\.", "cls.predictions.decoder."),
    (r"classifier\.", "classifier."),
]


def _t5_ffn(prefix: str, sub: int, gated: bool) -> list[tuple[str, str]]:
    rules = [
        (r"ffn\.w_out\.", f"layer.{sub}.DenseReluDense.wo."),
        (r"ffn_norm\.", f"layer.{sub}.layer_norm."),
    ]
    if gated:
        rules += [
            (r"ffn\.w_gate\.", f"layer.{sub}.DenseReluDense.wi_0."),
            (r"ffn\.w_in\.", f"layer.{sub}.DenseReluDense.wi_1."),
        ]
    else:
        rules += [(r"ffn\.w_in\.", f"layer.{sub}.DenseReluDense.wi.")]
    return [(rf"{prefix}\.layers\.(\d+)\.{o}", f"{prefix}.block.{{0}}.{h}") for o, h in rules]


def _t5_rules(config: ModelConfig) -> list[tuple[str, str]]:
    rules = [(r"shared\.", "shared."), (r"lm_head\.", "lm_head.")]
    if config.mixer == "local_attention":  # LongT5-local: the encoder's local bias lives in block 0
        rules += [(r"encoder\.local_bias\.", "encoder.block.0.layer.0.LocalSelfAttention.relative_attention_bias.")]
    if config.mixer == "transient_global":  # LongT5-TGlobal: the encoder's two stack biases live in block 0
        tg = "encoder.block.0.layer.0.TransientGlobalSelfAttention."
        rules += [
            (r"encoder\.local_bias\.", tg + "relative_attention_bias."),
            (r"encoder\.global_bias\.", tg + "global_relative_attention_bias."),
            (
                r"encoder\.layers\.(\d+)\.mixer\.global_norm\.",
                "encoder.block.{0}.layer.0.TransientGlobalSelfAttention.global_input_layer_norm.",
            ),
        ]
    for stack in ("encoder", "decoder"):
        hf_names = {"transient_global": "TransientGlobalSelfAttention", "local_attention": "LocalSelfAttention"}
        attn = hf_names.get(config.mixer, "SelfAttention") if stack == "encoder" else "SelfAttention"
        rules += [
            (rf"{stack}\.relative_bias\.", f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias."),
            (rf"{stack}\.final_norm\.", f"{stack}.final_layer_norm."),
            (
                rf"{stack}\.layers\.(\d+)\.mixer\.([qkvo])\.",
                f"{stack}.block.{{0}}.layer.0.{attn}.{{1}}.",
            ),
            (rf"{stack}\.layers\.(\d+)\.mixer_norm\.", f"{stack}.block.{{0}}.layer.0.layer_norm."),
        ]
    rules += [
        (r"decoder\.layers\.(\d+)\.cross\.([qkvo])\.", "decoder.block.{0}.layer.1.EncDecAttention.{1}."),
        (r"decoder\.layers\.(\d+)\.cross_norm\.", "decoder.block.{0}.layer.1.layer_norm."),
    ]
    rules += _t5_ffn("encoder", 1, config.gated_ffn) + _t5_ffn("decoder", 2, config.gated_ffn)
    return rules


_LLAMA = [
    (r"embed\.", "model.embed_tokens."),
    (r"layers\.(\d+)\.mixer\.([qkvo])\.", "model.layers.{0}.self_attn.{1}_proj."),
    (r"layers\.(\d+)\.mixer_norm\.", "model.layers.{0}.input_layernorm."),
    (r"layers\.(\d+)\.ffn_norm\.", "model.layers.{0}.post_attention_layernorm."),
    (r"layers\.(\d+)\.ffn\.w_gate\.", "model.layers.{0}.mlp.gate_proj."),
    (r"layers\.(\d+)\.ffn\.w_in\.", "model.layers.{0}.mlp.up_proj."),
    (r"layers\.(\d+)\.ffn\.w_out\.", "model.layers.{0}.mlp.down_proj."),
    (r"final_norm\.", "model.norm."),
    (r"lm_head\.", "lm_head."),
]


def is_fnet(config: ModelConfig) -> bool:
    """A BERT-family model with Fourier mixing in every layer: Hugging Face's `FNetModel`."""
    return config.family == "bert" and all(config.layer_mixer(i) == "fourier" for i in range(config.n_layers))


def _rules(config: ModelConfig) -> list[tuple[str, str]]:
    if is_fnet(config):
        body = "" if config.head == "base" else "encoder."
        return [(re.escape(body) + o, "fnet." + h) for o, h in _FNET_BODY] + _BERT_HEADS
    if config.family == "bert":
        body = "" if config.head == "base" else "encoder."
        return [(re.escape(body) + o, "bert." + h) for o, h in _BERT_BODY] + _BERT_HEADS
    if config.family == "t5":
        return _t5_rules(config)
    return _LLAMA


def hf_name(our_name: str, config: ModelConfig) -> str:
    """The Hugging Face state-dict name of our tensor `our_name`."""
    for pattern, template in _rules(config):
        m = re.match(pattern, our_name)
        if m:
            return template.format(*m.groups()) + our_name[m.end() :]
    raise KeyError(f"no Hugging Face name for {our_name!r} (family {config.family!r})")


def name_map(model: nn.Module) -> dict[str, str]:
    """Our state-dict names -> Hugging Face names, for every tensor of `model`."""
    return {k: hf_name(k, model.config) for k in model.state_dict()}


# ----------------------------------------------------------------------------- state dicts
def _normalise_hf_keys(state: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """Prefix a base model's keys as its *For...* class has them (BertModel -> bert.*, LlamaModel -> model.*)."""
    if family == "bert" and not any(k.startswith(("bert.", "fnet.", "cls.", "classifier.")) for k in state):
        prefix = "fnet." if any(".fourier." in k for k in state) else "bert."
        return {prefix + k: v for k, v in state.items()}
    if family == "decoder" and not any(k.startswith("model.") for k in state):
        return {(k if k == "lm_head.weight" else "model." + k): v for k, v in state.items()}
    return dict(state)


_IGNORED_HF = (
    r".*position_ids$",
    r".*token_type_ids$",
    r"bert\.embeddings\.position_ids",
    r"cls\.seq_relationship\..*",  # BERT pre-training NSP head: we have no NSP head
    r"model\.rotary_emb\.inv_freq",
)
# HF tensors that are copies of another one: (copy, source)
_TIED_HF = {
    "t5": [
        ("encoder.embed_tokens.weight", "shared.weight"),
        ("decoder.embed_tokens.weight", "shared.weight"),
    ],
    "bert": [
        ("cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight"),
        ("cls.predictions.decoder.bias", "cls.predictions.bias"),
    ],
    "decoder": [],
}


def _tied_copies(config: ModelConfig) -> dict[str, str]:
    """HF tensors that are copies of another HF tensor for this config: copy -> source."""
    tied = dict(_TIED_HF[config.family])
    if config.family == "bert" and config.head != "mlm":
        tied = {}
    elif is_fnet(config):
        tied["cls.predictions.decoder.weight"] = "fnet.embeddings.word_embeddings.weight"
    if config.family == "decoder" and config.tie_word_embeddings:
        tied["lm_head.weight"] = "model.embed_tokens.weight"
    if config.family == "t5" and config.tie_word_embeddings:
        tied["lm_head.weight"] = "shared.weight"
    return tied


def state_dict_from_hf(hf_state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Our state dict for `model` from a Hugging Face state dict; raises naming unmapped tensors."""
    config = model.config
    hf_state = _normalise_hf_keys(hf_state, config.family)
    names = name_map(model)
    missing = sorted(h for h in names.values() if h not in hf_state)
    if missing:
        raise CheckpointError(f"Hugging Face state dict lacks tensors our {config.family} model needs: {missing}")
    used = set(names.values())
    tied = _tied_copies(config)
    ignored = list(_IGNORED_HF)
    if is_fnet(config) and config.head == "mlm":
        ignored.append(r"fnet\.pooler\..*")  # HF's FNetForMaskedLM carries a pooler its MLM head never uses
    leftover = []
    for k, v in hf_state.items():
        if k in used or any(re.fullmatch(p, k) for p in ignored):
            continue
        if k in tied and tied[k] in hf_state:
            if not torch.equal(v, hf_state[tied[k]]):
                raise CheckpointError(f"{k} should be tied to {tied[k]} but differs; untied weights are not supported")
            continue
        leftover.append(k)
    if leftover:
        raise CheckpointError(f"Hugging Face tensors with no place in our model: {sorted(leftover)}")
    return {ours: hf_state[h] for ours, h in names.items()}


def state_dict_to_hf(model: nn.Module) -> dict[str, torch.Tensor]:
    """Hugging Face state dict of `model` (tied copies included)."""
    state = model.state_dict()
    out = {h: state[ours] for ours, h in name_map(model).items()}
    for copy, source in _tied_copies(model.config).items():
        if source in out:
            out[copy] = out[source]
    return out


# ----------------------------------------------------------------------------- configs
def config_from_hf(hf_config, head: str | None = None) -> ModelConfig:
    """Our config for a Hugging Face `BertConfig`, `T5Config` or `LlamaConfig`."""
    t = hf_config.model_type
    if t in ("bert", "fnet"):
        if getattr(hf_config, "position_embedding_type", "absolute") != "absolute":
            raise ValueError(
                f"position_embedding_type={hf_config.position_embedding_type!r}: only 'absolute' is supported"
            )
        d = hf_config.hidden_size
        fnet = t == "fnet"
        kinds = dict(mixer="fourier", embedding_projection=True) if fnet else {}
        return ModelConfig(
            family="bert",
            head=head or "base",
            vocab_size=hf_config.vocab_size,
            d_model=d,
            n_layers=hf_config.num_hidden_layers,
            # FNet has no attention: any head count dividing d_model will do
            n_heads=next(h for h in (12, 16, 8, 4, 2, 1) if d % h == 0) if fnet else hf_config.num_attention_heads,
            d_ff=hf_config.intermediate_size,
            activation=hf_config.hidden_act,
            norm="layernorm",
            norm_eps=hf_config.layer_norm_eps,
            max_seq_len=hf_config.max_position_embeddings,
            type_vocab_size=hf_config.type_vocab_size,
            dropout=hf_config.hidden_dropout_prob,
            attention_dropout=getattr(hf_config, "attention_probs_dropout_prob", 0.0),
            pad_token_id=getattr(hf_config, "pad_token_id", None) or 0,
            num_labels=getattr(hf_config, "num_labels", 2),
            **kinds,
        )
    if t in ("t5", "longt5"):
        extra = {}
        if t == "longt5":
            kind = hf_config.encoder_attention_type
            if kind not in ("local", "transient-global"):
                raise ValueError(f"LongT5 encoder_attention_type={kind!r} is not 'local' or 'transient-global'")
            extra = (
                dict(
                    mixer="transient_global",
                    options={"local_radius": hf_config.local_radius, "global_block": hf_config.global_block_size},
                )
                if kind == "transient-global"
                else dict(mixer="local_attention", options={"local_radius": hf_config.local_radius})
            )
        proj = hf_config.feed_forward_proj
        gated = proj.startswith("gated-")
        act = proj.split("-")[-1]
        act = "gelu_new" if act == "gelu" and gated else act  # HF maps gated-gelu to gelu_new
        return ModelConfig(
            family="t5",
            head=head or "seq2seq",
            vocab_size=hf_config.vocab_size,
            d_model=hf_config.d_model,
            head_dim=hf_config.d_kv,
            d_ff=hf_config.d_ff,
            n_layers=hf_config.num_layers,
            n_decoder_layers=hf_config.num_decoder_layers,
            n_heads=hf_config.num_heads,
            activation=act,
            gated_ffn=gated,
            bias=False,
            norm="rmsnorm",
            norm_eps=hf_config.layer_norm_epsilon,
            position="relative",
            relative_buckets=hf_config.relative_attention_num_buckets,
            relative_max_distance=hf_config.relative_attention_max_distance,
            attention_scale=1.0,
            dropout=hf_config.dropout_rate,
            attention_dropout=0.0,
            # transformers >= 5 always ties T5's lm_head to `shared` and keeps the T5-vs-T5.1.1
            # difference (scale the decoder output by d_model^-0.5, or not) in scale_decoder_outputs
            tie_word_embeddings=bool(getattr(hf_config, "scale_decoder_outputs", hf_config.tie_word_embeddings)),
            pad_token_id=getattr(hf_config, "pad_token_id", None) or 0,
            decoder_start_token_id=getattr(hf_config, "decoder_start_token_id", None) or 0,
            max_seq_len=16384,
            **extra,
        )
    if t == "gpt2":
        return ModelConfig(
            family="decoder",
            head="lm",
            vocab_size=hf_config.vocab_size,
            d_model=hf_config.n_embd,
            n_layers=hf_config.n_layer,
            n_heads=hf_config.n_head,
            d_ff=hf_config.n_inner or 4 * hf_config.n_embd,
            activation=hf_config.activation_function,
            gated_ffn=False,
            bias=True,
            norm="layernorm",
            norm_eps=hf_config.layer_norm_epsilon,
            position="learned",
            max_seq_len=hf_config.n_positions,
            tie_word_embeddings=True,
            dropout=0.0,
            attention_dropout=0.0,
        )
    if t == "llama":
        if getattr(hf_config, "attention_bias", False) != getattr(hf_config, "mlp_bias", False):
            raise ValueError("attention_bias and mlp_bias differ; frugalformers uses one `bias` flag for both")
        rope = getattr(hf_config, "rope_parameters", None) or getattr(hf_config, "rope_scaling", None) or {}
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"rope_type={rope.get('rope_type')!r} is not supported; only the default rotary")
        theta = rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
        head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads
        return ModelConfig(
            family="decoder",
            head="lm",
            vocab_size=hf_config.vocab_size,
            d_model=hf_config.hidden_size,
            n_layers=hf_config.num_hidden_layers,
            n_heads=hf_config.num_attention_heads,
            n_kv_heads=hf_config.num_key_value_heads,
            head_dim=head_dim,
            d_ff=hf_config.intermediate_size,
            activation=hf_config.hidden_act,
            gated_ffn=True,
            bias=bool(getattr(hf_config, "attention_bias", False)),
            norm="rmsnorm",
            norm_eps=hf_config.rms_norm_eps,
            position="rotary",
            rope_theta=float(theta),
            max_seq_len=hf_config.max_position_embeddings,
            tie_word_embeddings=hf_config.tie_word_embeddings,
            dropout=0.0,
            attention_dropout=float(getattr(hf_config, "attention_dropout", 0.0)),
            pad_token_id=hf_config.pad_token_id if hf_config.pad_token_id is not None else 0,
        )
    raise ValueError(f"Hugging Face model_type={t!r} is not supported; use bert, t5 or llama")


def hf_config_from(config: ModelConfig):
    """A Hugging Face config for our `config` (inverse of `config_from_hf`)."""
    import transformers

    if config.family == "bert":
        fnet = is_fnet(config)
        if fnet and config.embedding_dim != config.d_model:
            raise ValueError("FNetConfig has one width for embeddings and layers; d_emb must equal d_model")
        if not fnet and (config.embedding_projection or set(config.mixers()) != {"attention"}):
            raise ValueError(
                "BertConfig has attention in every layer and no embedding projection: export this "
                "model in our format (save), or use an all-Fourier model for FNetConfig"
            )
        shared = dict(
            vocab_size=config.vocab_size,
            hidden_size=config.d_model,
            num_hidden_layers=config.n_layers,
            intermediate_size=config.d_ff,
            hidden_act=config.activation,
            hidden_dropout_prob=config.dropout,
            max_position_embeddings=config.max_seq_len,
            type_vocab_size=config.type_vocab_size,
            layer_norm_eps=config.norm_eps,
            pad_token_id=config.pad_token_id,
            num_labels=config.num_labels,
        )
        if fnet:
            return transformers.FNetConfig(**shared)
        return transformers.BertConfig(
            num_attention_heads=config.n_heads, attention_probs_dropout_prob=config.attention_dropout, **shared
        )
    if config.family == "t5":
        if (
            config.n_heads not in {config.kv_heads, config.encoder_kv_heads, config.cross_kv_heads}
            or len({config.kv_heads, config.encoder_kv_heads, config.cross_kv_heads}) > 1
        ):
            raise ValueError("T5Config has no kv-head setting: export grouped-kv T5 models in our format")
        act = "gelu" if config.activation == "gelu_new" and config.gated_ffn else config.activation
        return transformers.T5Config(
            vocab_size=config.vocab_size,
            d_model=config.d_model,
            d_kv=config.resolved_head_dim,
            d_ff=config.d_ff,
            num_layers=config.n_layers,
            num_decoder_layers=config.decoder_layers,
            num_heads=config.n_heads,
            relative_attention_num_buckets=config.relative_buckets,
            relative_attention_max_distance=config.relative_max_distance,
            dropout_rate=config.dropout,
            layer_norm_epsilon=config.norm_eps,
            feed_forward_proj=("gated-" if config.gated_ffn else "") + act,
            tie_word_embeddings=config.tie_word_embeddings,
            pad_token_id=config.pad_token_id,
            decoder_start_token_id=config.decoder_start_token_id,
        )
    if config.norm != "rmsnorm" or config.position != "rotary" or not config.gated_ffn:
        raise ValueError(
            f"LlamaConfig needs RMSNorm, rotary positions and a gated FFN; this decoder has norm={config.norm!r}, "
            f"position={config.position!r}, gated_ffn={config.gated_ffn} (GPT-2 style, whose Hugging Face format "
            f"has no kv-head setting): save it in our format (`--format ours`)"
        )
    return transformers.LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.d_model,
        intermediate_size=config.d_ff,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        num_key_value_heads=config.kv_heads,
        head_dim=config.resolved_head_dim,
        hidden_act=config.activation,
        max_position_embeddings=config.max_seq_len,
        rms_norm_eps=config.norm_eps,
        rope_theta=config.rope_theta,
        attention_bias=config.bias,
        mlp_bias=config.bias,
        tie_word_embeddings=config.tie_word_embeddings,
        pad_token_id=config.pad_token_id,
    )


# ----------------------------------------------------------------------------- models
_HF_HEAD = {
    "BertForMaskedLM": "mlm",
    "BertForSequenceClassification": "classify",
    "T5Model": "base",
    "T5EncoderModel": "encoder",
    "LongT5Model": "base",
    "LongT5EncoderModel": "encoder",
    "FNetForMaskedLM": "mlm",
    "FNetForSequenceClassification": "classify",
}


def gpt2_state_dict(hf_state: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """Our decoder's state dict from a GPT-2 state dict: its Conv1D weights are (in, out), so they are
    transposed, and the fused c_attn is split into q, k, v."""
    hf_state = {k.removeprefix("transformer."): v for k, v in hf_state.items()}
    out = {
        "embed.weight": hf_state["wte.weight"],
        "positions.weight": hf_state["wpe.weight"],
        "final_norm.weight": hf_state["ln_f.weight"],
        "final_norm.bias": hf_state["ln_f.bias"],
    }
    for i in range(n_layers):
        h, o = f"h.{i}.", f"layers.{i}."
        w, b = hf_state[h + "attn.c_attn.weight"].t(), hf_state[h + "attn.c_attn.bias"]  # (3d, d), (3d,)
        for name, wi, bi in zip("qkv", w.chunk(3), b.chunk(3), strict=True):
            out[o + f"mixer.{name}.weight"], out[o + f"mixer.{name}.bias"] = wi.contiguous(), bi
        pairs = [("attn.c_proj", "mixer.o"), ("mlp.c_fc", "ffn.w_in"), ("mlp.c_proj", "ffn.w_out")]
        for hf_part, ours in pairs:
            out[o + ours + ".weight"] = hf_state[h + hf_part + ".weight"].t().contiguous()
            out[o + ours + ".bias"] = hf_state[h + hf_part + ".bias"]
        for hf_part, ours in (("ln_1", "mixer_norm"), ("ln_2", "ffn_norm")):
            out[o + ours + ".weight"] = hf_state[h + hf_part + ".weight"]
            out[o + ours + ".bias"] = hf_state[h + hf_part + ".bias"]
    return out


def from_hf_model(hf_model, head: str | None = None, **overrides):
    """Our model with the weights of an in-memory Hugging Face model (Bert*, FNet*, T5*, LongT5*
    with transient-global attention, Llama*, GPT2*)."""
    from frugalformers.api import build_model

    head = head or _HF_HEAD.get(type(hf_model).__name__)
    config = config_from_hf(hf_model.config, head)
    hf_state = hf_model.state_dict()
    if config.family == "decoder" and hf_model.config.model_type == "gpt2":
        model = build_model(config.replace(**overrides) if overrides else config)
        load_state_strict(model, gpt2_state_dict(hf_state, config.n_layers), source="Hugging Face GPT-2")
        return model
    if overrides:
        config = config.replace(**overrides)
    model = build_model(config)
    load_state_strict(model, state_dict_from_hf(hf_state, model), source="Hugging Face model")
    return model


def to_hf_model(model: nn.Module):
    """The equivalent Hugging Face model (BertModel / BertForMaskedLM / ..., T5*, LlamaForCausalLM)."""
    import transformers

    config = model.config
    classes = {
        ("bert", "base"): transformers.BertModel,
        ("bert", "mlm"): transformers.BertForMaskedLM,
        ("bert", "classify"): transformers.BertForSequenceClassification,
        ("t5", "seq2seq"): transformers.T5ForConditionalGeneration,
        ("t5", "base"): transformers.T5Model,
        ("t5", "encoder"): transformers.T5EncoderModel,
        ("decoder", "lm"): transformers.LlamaForCausalLM,
    }
    if is_fnet(config):
        classes.update(
            {
                ("bert", "base"): transformers.FNetModel,
                ("bert", "mlm"): transformers.FNetForMaskedLM,
                ("bert", "classify"): transformers.FNetForSequenceClassification,
            }
        )
    hf_model = classes[(config.family, config.head)](hf_config_from(config))
    state = state_dict_to_hf(model)
    if config.family == "bert" and config.head == "base":
        state = {k.removeprefix("bert.").removeprefix("fnet."): v for k, v in state.items()}
    result = hf_model.load_state_dict(state, strict=False)
    allowed = list(_IGNORED_HF) + ([r"fnet\.pooler\..*"] if is_fnet(config) and config.head == "mlm" else [])
    bad = [k for k in result.missing_keys if not any(re.fullmatch(p, k) for p in allowed)]
    if bad or result.unexpected_keys:
        raise CheckpointError(f"export mismatch: missing {bad}, unexpected {result.unexpected_keys}")
    exported = hf_model.state_dict()
    lost = [k for k, v in state.items() if k in exported and not torch.equal(exported[k].to(v.dtype), v.cpu())]
    if lost:
        raise CheckpointError(
            f"transformers {transformers.__version__} could not hold these tensors as given: {lost}; "
            f"(transformers >= 5 ties T5's lm_head to the shared embedding: untied T5 heads cannot be exported)"
        )
    return hf_model.eval() if not model.training else hf_model
