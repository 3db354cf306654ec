"""Our models against Hugging Face models with the same weights (tiny random configs, no download)."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from frugalformers.checkpoint import CheckpointError  # noqa: E402
from frugalformers.convert.hf import from_hf_model, state_dict_from_hf, to_hf_model  # noqa: E402

TOL = 1e-5
B, T = 3, 11


@pytest.fixture
def batch():
    ids = torch.randint(0, 99, (B, T))
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    return ids, mask


def bert_config(**kw):
    c = transformers.BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, **kw
    )
    return c


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("act", ["gelu", "gelu_new"])
def test_bert_model(batch, impl, act):
    ids, mask = batch
    cfg = bert_config(hidden_act=act)
    cfg._attn_implementation = impl
    hf = transformers.BertModel(cfg).eval()
    ours = from_hf_model(hf).eval()
    tt = torch.randint(0, 2, (B, T))
    with torch.no_grad():
        a = hf(ids, attention_mask=mask, token_type_ids=tt)
        b = ours(ids, token_type_ids=tt, attention_mask=mask)
    real = mask.bool()
    assert (a.last_hidden_state - b.hidden)[real].abs().max() <= TOL
    assert (a.pooler_output - b.pooled).abs().max() <= TOL


def test_bert_mlm_and_classifier(batch):
    ids, mask = batch
    hf = transformers.BertForMaskedLM(bert_config()).eval()
    ours = from_hf_model(hf).eval()
    with torch.no_grad():
        assert (hf(ids, attention_mask=mask).logits - ours(ids, attention_mask=mask).logits)[
            mask.bool()
        ].abs().max() <= TOL
    hf = transformers.BertForSequenceClassification(bert_config(num_labels=3)).eval()
    ours = from_hf_model(hf).eval()
    with torch.no_grad():
        assert (hf(ids, attention_mask=mask).logits - ours(ids, attention_mask=mask).logits).abs().max() <= TOL


def t5_config(**kw):
    return transformers.T5Config(
        vocab_size=99, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=3, num_heads=4, **kw
    )


@pytest.mark.parametrize("proj, tie", [("gated-gelu", False), ("relu", True)])
def test_t5_seq2seq(batch, proj, tie):
    ids, mask = batch
    hf = transformers.T5ForConditionalGeneration(t5_config(feed_forward_proj=proj, tie_word_embeddings=tie)).eval()
    ours = from_hf_model(hf).eval()
    dec = torch.randint(0, 99, (B, 6))
    dmask = torch.ones(B, 6, dtype=torch.long)
    dmask[0, 4:] = 0
    with torch.no_grad():
        a = hf(
            input_ids=ids,
            attention_mask=mask,
            decoder_input_ids=dec,
            decoder_attention_mask=dmask,
            output_hidden_states=True,
        )
        b = ours(ids, decoder_input_ids=dec, attention_mask=mask, decoder_attention_mask=dmask)
    assert (a.encoder_last_hidden_state - b.encoder_hidden)[mask.bool()].abs().max() <= TOL
    real = dmask.bool()
    assert (a.decoder_hidden_states[-1] - b.hidden)[real].abs().max() <= TOL
    # logits are O(10-100) with T5's unit-variance head: compare relative to their scale
    scale = a.logits.abs().max()
    assert ((a.logits - b.logits)[real].abs().max() / scale) <= TOL


def test_t5_encoder_model(batch):
    ids, mask = batch
    hf = transformers.T5EncoderModel(t5_config(feed_forward_proj="gated-gelu")).eval()
    ours = from_hf_model(hf).eval()
    with torch.no_grad():
        diff = hf(input_ids=ids, attention_mask=mask).last_hidden_state - ours(ids, attention_mask=mask).hidden
    assert diff[mask.bool()].abs().max() <= TOL


@pytest.mark.parametrize("kv", [4, 2, 1])
def test_llama(batch, kv):
    ids, _ = batch
    cfg = transformers.LlamaConfig(
        vocab_size=99,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv,
        rope_theta=500.0,
    )
    hf = transformers.LlamaForCausalLM(cfg).eval()
    ours = from_hf_model(hf).eval()
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 8:] = 0  # right padding: real positions must agree
    with torch.no_grad():
        a = hf(ids, attention_mask=mask).logits
        b = ours(ids, attention_mask=mask).logits
    assert (a - b)[mask.bool()].abs().max() <= TOL


@pytest.mark.parametrize(
    "make",
    [
        lambda: transformers.BertModel(bert_config()),
        lambda: transformers.BertForMaskedLM(bert_config()),
        lambda: transformers.T5ForConditionalGeneration(t5_config(feed_forward_proj="gated-gelu")),
        lambda: transformers.LlamaForCausalLM(
            transformers.LlamaConfig(
                vocab_size=99,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
            )
        ),
    ],
)
def test_export_round_trip(make):
    hf = make().eval()
    ours = from_hf_model(hf).eval()
    back = to_hf_model(ours).eval()
    hs, bs = hf.state_dict(), back.state_dict()
    for k in hs:
        assert torch.equal(hs[k], bs[k]), k


def test_unmapped_hf_tensor_is_named():
    hf = transformers.BertModel(bert_config())
    ours = from_hf_model(hf)
    state = dict(hf.state_dict())
    state["encoder.layer.0.attention.self.rel_bias"] = torch.zeros(2)
    with pytest.raises(CheckpointError, match="rel_bias"):
        state_dict_from_hf(state, ours)
    del state["encoder.layer.0.attention.self.rel_bias"]
    del state["pooler.dense.weight"]
    with pytest.raises(CheckpointError, match="pooler.dense.weight"):
        state_dict_from_hf(state, ours)


@pytest.mark.parametrize("impl", ["sdpa", "reference"])
def test_longt5_transient_global_encoder(impl):
    """HF LongT5EncoderModel (transient-global) and ours with the same weights: several local blocks,
    several global blocks, an incomplete last block (orphans) and a padded row."""
    cfg = transformers.LongT5Config(
        vocab_size=99, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, feed_forward_proj="gated-gelu",
        encoder_attention_type="transient-global", local_radius=5, global_block_size=4, dropout_rate=0.0,
    )  # fmt: skip
    hf = transformers.LongT5EncoderModel(cfg).eval()
    with torch.no_grad():  # HF initialises the global bias table to zeros: give it values
        for layer in hf.encoder.block:
            att = layer.layer[0].TransientGlobalSelfAttention
            if att.has_relative_attention_bias:
                att.global_relative_attention_bias.weight.normal_()
            att.global_input_layer_norm.weight.uniform_(0.5, 1.5)
    ours = from_hf_model(hf, attention_impl=impl).eval()
    assert ours.config.mixer == "transient_global"
    ids = torch.randint(0, 99, (2, 30))
    mask = torch.ones(2, 30, dtype=torch.long)
    mask[1, 21:] = 0
    with torch.no_grad():
        a = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        b = ours(ids, attention_mask=mask).hidden
    assert (a - b)[mask.bool()].abs().max() <= TOL


@pytest.mark.parametrize("impl", ["sdpa", "reference"])
def test_longt5_local_encoder_with_its_relative_bias(impl):
    """HF LongT5EncoderModel with local attention (its `LocalSelfAttention.relative_attention_bias`
    in block 0, shared by the layers) and ours with the same weights: several blocks, a padded row."""
    cfg = transformers.LongT5Config(
        vocab_size=99, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, feed_forward_proj="gated-gelu",
        encoder_attention_type="local", local_radius=5, dropout_rate=0.0,
    )  # fmt: skip
    hf = transformers.LongT5EncoderModel(cfg).eval()
    ours = from_hf_model(hf, attention_impl=impl).eval()
    assert ours.config.mixer == "local_attention" and ours.encoder.local_bias is not None
    ids = torch.randint(0, 99, (2, 30))
    mask = torch.ones(2, 30, dtype=torch.long)
    mask[1, 21:] = 0
    with torch.no_grad():
        a = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        b = ours(ids, attention_mask=mask).hidden
    assert (a - b)[mask.bool()].abs().max() <= TOL
