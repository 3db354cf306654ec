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


def test_split_k_linear_equals_linear():
    from frugalformers.nn.fused_linear import split_k_linear

    torch.manual_seed(0)
    for shape, n, splits, bias in [((3, 1, 512), 96, 4, True), ((32, 1024), 40, 8, False), ((2, 2, 256), 8, 1, True)]:
        x, w = torch.randn(*shape, dtype=torch.float64), torch.randn(n, shape[-1], dtype=torch.float64)
        b = torch.randn(n, dtype=torch.float64) if bias else None
        y = split_k_linear(x, w, b, splits)
        assert y.shape == (*shape[:-1], n) and y.dtype == x.dtype
        torch.testing.assert_close(y, torch.nn.functional.linear(x, w, b))
    try:
        split_k_linear(torch.randn(2, 10), torch.randn(3, 10), None, 4)
    except ValueError as e:
        assert "splits=4" in str(e) and "10" in str(e)
    else:
        raise AssertionError("a split that does not divide K must be refused")


def test_split_k_count_fills_the_target_tiles_within_limits():
    from frugalformers.nn.fused_linear import split_k_count

    assert split_k_count(2048, 8192, 264) == 32  # 16 tiles x 32 = 512 >= 264 (16 x 16 = 256 is short)
    assert split_k_count(2048, 2048, 264) == 8  # chunks of 256: the most 2048 allows
    assert split_k_count(2048, 5632, 264) == 16  # 5632 = 11 x 512: 16 chunks of 352 (32 would be 176 < 256)
    assert split_k_count(11264, 2048, 264) == 4  # 88 tiles x 4 = 352 >= 264
    assert split_k_count(128256, 2048, 264) == 1  # the LM head has tiles enough
    assert split_k_count(96, 192, 64) == 1  # too short to split


def test_split_k_decoding_equals_plain_decoding():
    """Decode steps with split-K GEMMs give the plain steps' logits (fp32, CPU: the split runs here too);
    the prefill (more rows than DECODE_MAX_ROWS) keeps one GEMM."""
    from unittest import mock

    from frugalformers.nn import fused_linear

    torch.manual_seed(0)
    model = build_model("llama-tiny-gqa4", d_model=512, d_ff=1024, n_heads=4, n_kv_heads=2, n_layers=2).eval()
    ids = torch.randint(5, 100, (3, 30))  # a prefill of 90 rows: more than DECODE_MAX_ROWS
    model.setup_cache(3, 40, decode_gemm="split-k")
    assert all(layer.mixer.decode_gemm > 0 and layer.ffn.decode_gemm > 0 for layer in model.layers)
    with torch.no_grad(), mock.patch.object(fused_linear, "split_k_linear", wraps=fused_linear.split_k_linear) as spy:
        model(ids, input_pos=torch.arange(30))
        assert spy.call_count == 0  # the prefill keeps one GEMM per projection
        steps = [model(ids[:, i : i + 1] * 0 + 7 + i, input_pos=torch.tensor([30 + i])).logits for i in range(3)]
        assert spy.call_count == 3 * 2 * 4  # every step: q/k/v, o, gate/up and down of both layers were split
    model.setup_cache(3, 40)
    assert all(layer.mixer.decode_gemm == 0 for layer in model.layers)
    with torch.no_grad():
        model(ids, input_pos=torch.arange(30))
        plain = [model(ids[:, i : i + 1] * 0 + 7 + i, input_pos=torch.tensor([30 + i])).logits for i in range(3)]
    model.clear_cache()
    for a, b in zip(steps, plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
