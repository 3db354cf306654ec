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

from frugalformers.api import build_model
from frugalformers.checkpoint import CheckpointError, load_state_strict
from frugalformers.config import ModelConfig
from frugalformers.convert.hf_config import config_from_hf, hf_config_from, is_fnet

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
