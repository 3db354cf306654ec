import pytest
import torch

from frugalformers import ModelConfig, build_model, count_parameters
from frugalformers.presets import PRESETS, get_preset

# (overrides of a valid config, text the error must contain)
BAD = [
    (dict(family="rnn"), "family='rnn'"),
    (dict(head="seq2seq"), "head"),
    (dict(vocab_size=0), "vocab_size=0"),
    (dict(d_model=-8), "d_model=-8"),
    (dict(n_layers=2.5), "n_layers=2.5"),
    (dict(n_heads=5), "n_heads=5"),
    (dict(n_kv_heads=5), "n_kv_heads=5"),
    (dict(n_kv_heads=0), "n_kv_heads=0"),
    (dict(d_ff=0), "d_ff=0"),
    (dict(activation="swish"), "activation='swish'"),
    (dict(norm="batchnorm"), "norm='batchnorm'"),
    (dict(norm_eps=0.0), "norm_eps=0.0"),
    (dict(position="rotary"), "position"),
    (dict(dropout=1.0), "dropout=1.0"),
    (dict(attention_dropout=-0.1), "attention_dropout=-0.1"),
    (dict(max_seq_len=0), "max_seq_len=0"),
    (dict(d_emb=16), "d_emb=16"),
    (dict(relative_buckets=7), "relative_buckets=7"),
    (dict(relative_max_distance=4), "relative_max_distance=4"),
    (dict(pad_token_id=99999), "pad_token_id=99999"),
    (dict(attention_impl="flash9"), "attention_impl='flash9'"),
    (dict(mixer="fourier9"), "mixer='fourier9'"),
    (dict(layer_ffns=("dense",)), "layer_ffns has 1 entries"),
    (dict(layer_mixers=("attention", "nope")), r"layer_mixers\[1\]='nope'"),
    (dict(n_decoder_layers=3), "n_decoder_layers=3"),
    (dict(num_labels=0), "num_labels=0"),
    (dict(rope_theta=-1.0), "rope_theta=-1.0"),
    (dict(init_std=0), "init_std=0"),
    (dict(embedding_projection=True, family="decoder", position="rotary", head="lm"), "embedding_projection"),
]


@pytest.mark.parametrize("overrides, message", BAD)
def test_bad_values_raise_clear_errors(overrides, message):
    base = dict(family="bert", vocab_size=100, d_model=32, n_layers=2, n_heads=4, d_ff=64)
    with pytest.raises(ValueError, match=message):
        ModelConfig(**{**base, **overrides})


def test_bad_tables_are_long_enough():
    assert len(BAD) >= 15


def test_unknown_override_suggests_the_field():
    with pytest.raises(ValueError, match=r"unknown config field 'n_head'.*n_heads"):
        get_preset("bert-tiny").replace(n_head=3)


def test_unknown_preset_suggests():
    with pytest.raises(ValueError, match="bert-base"):
        get_preset("bert-bas")


def test_dict_round_trip():
    c = get_preset("t5-tiny").replace(layer_ffns=("dense", "dense"))
    assert ModelConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds(name):
    with torch.device("meta"):
        model = build_model(name)
    assert count_parameters(model) > 0


def test_bert_base_has_110m_parameters():
    with torch.device("meta"):
        n = count_parameters(build_model("bert-base", head="base"))
    assert 109e6 < n < 111e6  # BERT-Base: 110M (Devlin et al. 2019, Table 1 footnote)


def test_llama_1b_shapes():
    c = get_preset("llama-1b-gqa4")
    assert (c.d_model, c.n_layers, c.n_heads, c.kv_heads, c.d_ff, c.vocab_size) == (
        2048,
        16,
        16,
        4,
        5632,
        32000,
    )
    assert get_preset("llama-1b-mqa").kv_heads == 1 and get_preset("llama-1b").kv_heads == 16


def test_decoder_layer_ffns_are_checked():
    with pytest.raises(ValueError, match="decoder_layer_ffns has 1 entries but the decoder has 2 layers"):
        get_preset("t5-tiny").replace(decoder_layer_ffns=("dense",))
    with pytest.raises(ValueError, match="decoder_layer_ffns is for the t5 family"):
        get_preset("llama-tiny").replace(decoder_layer_ffns=("dense", "dense"))
    with pytest.raises(ValueError, match=r"decoder_layer_ffns\[1\]"):
        get_preset("t5-tiny").replace(decoder_layer_ffns=("dense", "experts"))
    assert get_preset("mowe-tiny").decoder_layer_ffn(1) == "word_experts"


def test_block_options_are_typed_validated_and_merged_key_by_key():
    """A misspelled block option is an error with the close key; a wrong type too; overriding one
    option keeps the preset's others (sparse-mixer-tiny keeps its 4 experts); the constructors'
    defaults are the option classes' defaults."""
    from frugalformers.api import build_model
    from frugalformers.nn.moe import MoEFeedForward
    from frugalformers.options import MoEOptions
    from frugalformers.train.config import load_run_config

    with pytest.raises(ValueError, match=r"unknown block option 'capacity_factr'; did you mean \['capacity_factor'"):
        build_model("sparse-mixer-tiny", options={"capacity_factr": 9})
    with pytest.raises(ValueError, match=r"options.n_experts='4' must be int \(MoEOptions\)"):
        build_model("sparse-mixer-tiny", options={"n_experts": "4"})
    with pytest.raises(ValueError, match=r"options.mowe_sparse_grad=1 must be bool"):
        build_model("mowe-tiny", options={"mowe_sparse_grad": 1})
    m = build_model("sparse-mixer-tiny", options={"capacity_factor": 2.0})
    assert m.config.options["n_experts"] == 4 and m.config.options["capacity_factor"] == 2.0
    cfg = load_run_config("sparse-mixer-tiny", None, ["model.options.capacity_factor=2.0"])
    config = get_preset("sparse-mixer-tiny").replace(**cfg.model)
    assert config.options["n_experts"] == 4 and config.options["capacity_factor"] == 2.0
    assert MoEFeedForward(8, 16).dropout.p == MoEOptions.expert_dropout == 0.1
