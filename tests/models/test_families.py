import math

import pytest
import torch

from frugalformers import build_model
from frugalformers.api import example_inputs


def test_decoder_cached_decoding_equals_full_forward():
    model = build_model("llama-tiny-gqa4").eval()
    ids = torch.randint(0, 8192, (2, 12))
    with torch.no_grad():
        full = model(ids).logits
        model.setup_cache(2, 16)
        steps = [model(ids[:, :5], input_pos=torch.arange(5)).logits]
        for t in range(5, 12):
            steps.append(model(ids[:, t : t + 1], input_pos=torch.tensor([t])).logits)
        model.clear_cache()
    assert (torch.cat(steps, 1) - full).abs().max() <= 1e-5


def test_t5_cached_decoding_equals_full_forward():
    model = build_model("t5-tiny").eval()
    src = torch.randint(0, 8192, (2, 9))
    src_mask = torch.ones(2, 9, dtype=torch.long)
    src_mask[1, 6:] = 0
    dec = torch.randint(0, 8192, (2, 7))
    with torch.no_grad():
        full = model(src, decoder_input_ids=dec, attention_mask=src_mask).logits
        memory, _ = model.encode(src, src_mask)
        kv = model.cross_kv(memory)
        model.setup_cache(2, 8)
        steps = [model.decode_step(dec[:, t : t + 1], torch.tensor([t]), src_mask.bool(), kv) for t in range(7)]
        model.clear_cache()
    assert (torch.cat(steps, 1) - full).abs().max() <= 1e-4 * full.abs().max()


def test_gqa_model_with_all_kv_heads_equals_mha_model():
    mha = build_model("llama-tiny").eval()
    gqa = build_model("llama-tiny", n_kv_heads=8).eval()
    gqa.load_state_dict(mha.state_dict())
    ids = torch.randint(0, 8192, (2, 10))
    with torch.no_grad():
        assert torch.equal(mha(ids).logits, gqa(ids).logits)


def test_bert_padding_does_not_change_real_tokens():
    model = build_model("bert-tiny").eval()
    ids = torch.randint(0, 8192, (1, 8))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1)
    mask = torch.cat([torch.ones(1, 8), torch.zeros(1, 4)], 1).long()
    with torch.no_grad():
        a = model(ids).hidden
        b = model(padded, attention_mask=mask).hidden[:, :8]
    assert (a - b).abs().max() <= 1e-5


def test_causal_decoder_ignores_future_tokens():
    model = build_model("llama-tiny-mqa").eval()
    ids = torch.randint(0, 8192, (1, 10))
    other = ids.clone()
    other[0, 6:] = 7
    with torch.no_grad():
        assert (model(ids).logits[:, :6] - model(other).logits[:, :6]).abs().max() <= 1e-6


@pytest.mark.parametrize("name", ["bert-tiny", "t5-tiny", "llama-tiny-gqa4"])
def test_bf16_autocast_and_training_step(name):
    model = build_model(name)
    inputs = example_inputs(model.config, 2, 16)
    labels = torch.randint(0, 8192, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**inputs, labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_reference_attention_impl_matches_sdpa_in_a_model():
    fast = build_model("t5-tiny").eval()
    ref = build_model("t5-tiny", attention_impl="reference").eval()
    ref.load_state_dict(fast.state_dict())
    inputs = example_inputs(fast.config, 2, 10)
    with torch.no_grad():
        a, b = fast(**inputs).logits, ref(**inputs).logits
    assert (a - b).abs().max() <= 1e-5 * a.abs().max()


def test_classification_head_and_regression():
    model = build_model("bert-tiny", head="classify", num_labels=3)
    out = model(torch.randint(0, 8192, (4, 8)), labels=torch.tensor([0, 1, 2, 1]))
    assert out.logits.shape == (4, 3) and out.loss > 0
    reg = build_model("bert-tiny", head="classify", num_labels=1)
    assert reg(torch.randint(0, 8192, (2, 8)), labels=torch.tensor([0.5, -1.0])).loss > 0


def test_tiny_model_overfits_one_batch():
    model = build_model("llama-tiny", vocab_size=64)
    ids = torch.randint(0, 64, (4, 16))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = model(ids, labels=ids).loss
        first = first or loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first


@pytest.mark.parametrize("name", ["t5-tiny", "colt5-tiny", "switch-tiny"])
def test_untrained_t5_loss_is_near_uniform(name):
    """T5X's init (logits_dense fan-in): an untrained T5.1.1 predicts nearly uniformly, so its loss is
    close to log(vocab). Hugging Face's lm_head std of 1.0 starts sqrt(d_model) times too confident."""
    model = build_model(name, d_model=256, n_heads=4, head_dim=64)
    vocab = model.config.vocab_size
    ids, labels = torch.randint(0, vocab, (4, 32)), torch.randint(0, vocab, (4, 8))
    with torch.no_grad():
        loss = model(ids, labels=labels).loss.item()
    assert abs(loss - math.log(vocab)) < 1.0, (loss, math.log(vocab))
