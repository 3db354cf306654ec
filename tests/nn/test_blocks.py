import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from frugalformers.nn import FeedForward, RMSNorm, RotaryEmbedding, apply_rotary, relative_position_bucket
from frugalformers.nn.ffn import activation_fn
from frugalformers.nn.positions import LearnedPositions, RelativePositionBias


def test_rmsnorm_matches_formula():
    norm = RMSNorm(8, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(8))
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    xn = x.numpy()
    expected = xn / np.sqrt((xn**2).mean(-1, keepdims=True) + 1e-6) * norm.weight.detach().double().numpy()
    assert np.abs(norm(x.float()).detach().double().numpy() - expected).max() < 1e-5


@pytest.mark.parametrize(
    "name, ref",
    [
        ("gelu", lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))),
        ("gelu_new", lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))),
        ("relu", lambda x: x.clamp(min=0)),
        ("silu", lambda x: x * torch.sigmoid(x)),
    ],
)
def test_activations(name, ref):
    x = torch.randn(100, dtype=torch.float64)
    assert (activation_fn(name)(x) - ref(x)).abs().max() < 1e-12


def test_unknown_activation_lists_valid():
    with pytest.raises(ValueError, match="swish.*gelu"):
        activation_fn("swish")


def test_gated_ffn_is_swiglu():
    ffn = FeedForward(8, 16, "silu", gated=True, bias=False)
    x = torch.randn(2, 3, 8)
    W1, W3, W2 = ffn.w_gate.weight, ffn.w_in.weight, ffn.w_out.weight
    expected = (F.silu(x @ W1.T) * (x @ W3.T)) @ W2.T
    assert (ffn(x) - expected).abs().max() < 1e-6


def test_dense_ffn():
    ffn = FeedForward(8, 16, "gelu")
    x = torch.randn(2, 3, 8)
    expected = F.linear(F.gelu(F.linear(x, ffn.w_in.weight, ffn.w_in.bias)), ffn.w_out.weight, ffn.w_out.bias)
    assert (ffn(x) - expected).abs().max() < 1e-6


def _hf_bucket(rp, bidirectional, num_buckets, max_distance):
    """Transcription of the Mesh TensorFlow / T5 bucket rule (scalar, pure Python)."""
    ret = 0
    n = -rp
    if bidirectional:
        num_buckets //= 2
        ret += (n < 0) * num_buckets
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return ret + n
    val = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    return ret + min(val, num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_buckets_match_t5_rule(bidirectional):
    rel = torch.arange(-300, 301)
    ours = relative_position_bucket(rel, bidirectional, 32, 128)
    expected = [_hf_bucket(int(r), bidirectional, 32, 128) for r in rel]
    assert ours.tolist() == expected


def test_relative_bias_shape_and_sharing():
    rb = RelativePositionBias(4, 32, 128, bidirectional=True)
    b = rb(5, 7)
    assert b.shape == (1, 4, 5, 7)
    # same offset -> same bias: (i, j) and (i+1, j+1)
    assert torch.equal(b[0, :, 0, 1], b[0, :, 1, 2])


def test_rotary_scores_depend_only_on_offset():
    rot = RotaryEmbedding(8, 64)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(i, j):
        cq, sq = rot(torch.tensor([i]))
        ck, sk = rot(torch.tensor([j]))
        return (apply_rotary(q, cq, sq) * apply_rotary(k, ck, sk)).sum()

    assert torch.allclose(score(3, 1), score(10, 8), atol=1e-5)
    assert not torch.allclose(score(3, 1), score(3, 2), atol=1e-3)


def test_rotary_tables_stay_fp32_under_half_cast():
    rot = RotaryEmbedding(8, 16).to(torch.bfloat16)
    assert rot.cos.dtype == torch.float32


def test_rotary_needs_even_head_dim():
    with pytest.raises(ValueError, match="head_dim=7"):
        RotaryEmbedding(7, 16)


def test_learned_positions_error_names_the_length():
    with pytest.raises(ValueError, match="max_seq_len=8"):
        LearnedPositions(8, 4)(9)
