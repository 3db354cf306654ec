"""Fused q/k/v and gate/up GEMMs (decoding) give the unfused outputs and keep training sound."""

import torch

from frugalformers import build_model
from frugalformers.checkpoint import load, save
from frugalformers.nn.attention import Attention
from frugalformers.nn.ffn import FeedForward


def test_fused_attention_and_ffn_equal_unfused():
    torch.manual_seed(0)
    attn = Attention(32, 4, n_kv_heads=2, bias=True, causal=True)
    ffn = FeedForward(32, 48, "silu", gated=True, bias=False)
    x = torch.randn(2, 5, 32)
    ref_a, ref_f = attn(x), ffn(x)
    params = [id(p) for p in (*attn.parameters(), *ffn.parameters())]
    attn.fuse_projections()
    ffn.fuse_projections()
    assert [id(p) for p in (*attn.parameters(), *ffn.parameters())] == params  # same Parameter objects
    torch.testing.assert_close(attn(x), ref_a, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ffn(x), ref_f, rtol=1e-5, atol=1e-6)
    # an optimizer step on the (now view) parameters moves the fused weights with them
    opt = torch.optim.SGD(attn.parameters(), lr=0.1)
    attn(x).sum().backward()
    opt.step()
    fused_out = attn(x)
    attn.unfuse_projections()
    torch.testing.assert_close(fused_out, attn(x), rtol=1e-5, atol=1e-6)


def test_decoding_fuses_then_saves_and_trains_normally(tmp_path):
    torch.manual_seed(0)
    model = build_model("llama-tiny-gqa4").eval()
    ids = torch.randint(5, 100, (2, 6))
    full = model(ids).logits
    model.setup_cache(2, 8)
    step = model(ids, input_pos=torch.arange(6)).logits  # fused path
    torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-5)
    model.clear_cache()
    assert all(layer.mixer._fused_qkv is None for layer in model.layers)
    save(model, tmp_path / "m")  # parameters that are views of one tensor still save (and load) apart
    again = load(tmp_path / "m")
    torch.testing.assert_close(again(ids).logits, full, rtol=1e-5, atol=1e-6)
