import numpy as np
import pytest
import torch

from frugalformers.nn import Attention, KVCache
from frugalformers.nn.attention import build_attention_mask


def numpy_attention(x, ctx, attn, key_mask=None, bias=None, causal=False):
    """float64 NumPy attention with per-head loops: the outside reference."""
    W = {n: getattr(attn, n).weight.detach().double().numpy() for n in "qkvo"}
    b = {
        n: (getattr(attn, n).bias.detach().double().numpy() if getattr(attn, n).bias is not None else 0) for n in "qkvo"
    }
    x, ctx = x.double().numpy(), ctx.double().numpy()
    B, T, _ = x.shape
    S = ctx.shape[1]
    H, G, D = attn.n_heads, attn.n_kv_heads, attn.head_dim
    q = (x @ W["q"].T + b["q"]).reshape(B, T, H, D)
    k = (ctx @ W["k"].T + b["k"]).reshape(B, S, G, D)
    v = (ctx @ W["v"].T + b["v"]).reshape(B, S, G, D)
    out = np.zeros((B, T, H, D))
    for bi in range(B):
        for h in range(H):
            g = h // (H // G)  # contiguous groups
            s = q[bi, :, h] @ k[bi, :, g].T * attn.scale
            if bias is not None:
                s = s + bias[0, h].double().numpy()
            allowed = np.ones((T, S), bool)
            if key_mask is not None:
                allowed &= key_mask[bi].numpy()[None, :]
            if causal:
                allowed &= np.tril(np.ones((T, S), bool), k=S - T)
            s = np.where(allowed, s, -1e300)
            p = np.exp(s - s.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            out[bi, :, h] = p @ v[bi, :, g]
    return torch.from_numpy(out.reshape(B, T, H * D) @ W["o"].T + b["o"])


CASES = [
    dict(n_heads=4, n_kv_heads=4),
    dict(n_heads=8, n_kv_heads=2),
    dict(n_heads=8, n_kv_heads=1),
    dict(n_heads=6, n_kv_heads=3, head_dim=5),
]


@pytest.mark.parametrize("heads", CASES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_sdpa_equals_reference_equals_numpy(heads, causal, padded):
    attn = Attention(32, causal=causal, bias=True, **heads).eval()
    x = torch.randn(3, 9, 32)
    mask = None
    if padded:
        mask = torch.ones(3, 9, dtype=torch.bool)
        mask[1, 6:] = False
        mask[2, 2:] = False
    fast = attn(x, key_padding_mask=mask)
    attn.impl = "reference"
    ref = attn(x, key_padding_mask=mask)
    assert (fast - ref).abs().max() <= 1e-5
    expected = numpy_attention(x, x, attn, mask, causal=causal)
    assert (ref.double() - expected).abs().max() <= 1e-5


def test_bias_and_cross_attention_match_numpy():
    attn = Attention(16, n_heads=4, n_kv_heads=2, d_context=24, bias=False, scale=1.0).eval()
    x, ctx = torch.randn(2, 5, 16), torch.randn(2, 7, 24)
    bias = torch.randn(1, 4, 5, 7)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3]).bool()
    fast = attn(x, ctx, key_padding_mask=mask, attn_bias=bias)
    attn.impl = "reference"
    ref = attn(x, ctx, key_padding_mask=mask, attn_bias=bias)
    assert (fast - ref).abs().max() <= 1e-5
    assert (ref.double() - numpy_attention(x, ctx, attn, mask, bias)).abs().max() <= 1e-5


def test_gqa_with_all_kv_heads_is_mha_exactly():
    mha = Attention(32, n_heads=4).eval()
    gqa = Attention(32, n_heads=4, n_kv_heads=4).eval()
    gqa.load_state_dict(mha.state_dict())
    x = torch.randn(2, 6, 32)
    assert torch.equal(mha(x), gqa(x))


def test_gqa_equals_mha_with_repeated_kv_heads():
    gqa = Attention(32, n_heads=8, n_kv_heads=2, bias=True).eval()
    mha = Attention(32, n_heads=8, bias=True).eval()
    with torch.no_grad():
        for n in ("q", "o"):
            getattr(mha, n).load_state_dict(getattr(gqa, n).state_dict())
        for n in ("k", "v"):
            w = getattr(gqa, n).weight.view(2, 4, 32).repeat_interleave(4, 0).reshape(32, 32)
            getattr(mha, n).weight.copy_(w)
            getattr(mha, n).bias.copy_(getattr(gqa, n).bias.view(2, 4).repeat_interleave(4, 0).reshape(32))
    x = torch.randn(2, 6, 32)
    assert (gqa(x) - mha(x)).abs().max() <= 1e-6


def test_fully_masked_rows_give_no_nan():
    attn = Attention(16, n_heads=2, causal=True).eval()
    x = torch.randn(1, 4, 16)
    mask = torch.tensor([[False, False, True, True]])  # left padding: rows 0, 1 see no real key
    for impl in ("sdpa", "reference"):
        attn.impl = impl
        assert torch.isfinite(attn(x, key_padding_mask=mask)).all()


def test_kv_cache_decoding_equals_full_attention():
    attn = Attention(32, n_heads=8, n_kv_heads=2, causal=True).eval()
    x = torch.randn(2, 10, 32)
    full = attn(x)
    cache = KVCache(2, 2, 16, 4)
    out = [attn(x[:, :4], kv_cache=cache, input_pos=torch.arange(4))]  # prefill
    for t in range(4, 10):
        out.append(attn(x[:, t : t + 1], kv_cache=cache, input_pos=torch.tensor([t])))
    assert (torch.cat(out, 1) - full).abs().max() <= 1e-5
    assert cache.k.shape == (2, 2, 16, 4)  # only the kv heads are stored


def test_mask_builder_uses_absolute_positions():
    m = build_attention_mask(None, None, True, 2, 5, torch.float32, torch.device("cpu"), torch.tensor([1, 3]))
    allowed = m[0, 0] == 0
    assert allowed.tolist() == [[True, True, False, False, False], [True, True, True, True, False]]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(d_model=32, n_heads=6, n_kv_heads=4), "n_kv_heads"),
        (dict(d_model=30, n_heads=4), "d_model=30"),
        (dict(d_model=32, n_heads=0), "n_heads"),
        (dict(d_model=32, n_heads=4, impl="flash9"), "impl"),
        (dict(d_model=32, n_heads=4, dropout=1.5), "dropout"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Attention(**kwargs)


def test_bf16_autocast_runs_and_is_close():
    attn = Attention(32, n_heads=8, n_kv_heads=2).eval()
    x = torch.randn(2, 6, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attn(x)
    assert y.dtype == torch.bfloat16
    assert (y.float() - attn(x)).abs().max() < 5e-2


@pytest.mark.parametrize("G", [1, 2, 4, 8])
def test_grouped_decode_path_equals_reference(G):
    """Decoding with a cache takes the grouped path (K/V read once per group) for G < H, by matmuls
    (on CPU the Triton path falls back to them); both equal the reference."""
    attn = Attention(64, n_heads=8, n_kv_heads=G, causal=True).eval()
    x = torch.randn(3, 12, 64)
    mask = torch.ones(3, 16, dtype=torch.bool)
    mask[1, :3] = False  # left padding in the cache
    bias = torch.randn(1, 8, 1, 16)
    outs = {}
    cases = {"matmul": ("sdpa", "matmul"), "triton": ("sdpa", "triton"), "reference": ("reference", "matmul")}
    for name, (impl, grouped) in cases.items():
        attn.impl, attn.grouped_decode = impl, grouped
        cache = KVCache(3, G, 16, 8)
        with torch.no_grad():
            attn(x[:, :6], kv_cache=cache, input_pos=torch.arange(6), key_padding_mask=mask)
            steps = [
                attn(
                    x[:, t : t + 1], kv_cache=cache, input_pos=torch.tensor([t]), key_padding_mask=mask, attn_bias=bias
                )
                for t in range(6, 12)
            ]
        outs[name] = torch.cat(steps, 1)
    for name in ("matmul", "triton"):
        assert (outs[name] - outs["reference"]).abs().max() <= 1e-5, name


def test_grouped_decode_option_is_checked_and_reset():
    from frugalformers import build_model

    model = build_model("llama-tiny-gqa4")
    with pytest.raises(ValueError, match="grouped_decode='flash'"):
        model.setup_cache(1, 8, grouped_decode="flash")
    model.setup_cache(1, 8, grouped_decode="matmul")
    assert {layer.mixer.grouped_decode for layer in model.layers} == {"matmul"}
    model.clear_cache()
    assert {layer.mixer.grouped_decode for layer in model.layers} == {"matmul"}


def test_auto_grouped_decode_is_the_triton_kernel_on_cuda_only():
    """setup_cache's default: the flash-decoding kernel where it is measured faster (CUDA, a layer
    cache of 16 MB or more), the matmul path for small caches and on CPU (where the Triton kernel
    would not run); an unknown choice is named."""
    from frugalformers import build_model
    from frugalformers.kernels.triton_support import triton
    from frugalformers.models.decoding import resolve_grouped_decode

    assert resolve_grouped_decode("auto", torch.device("cpu")) == "matmul"
    big, small = 2 * 32 * 4 * 1024 * 128 * 2, 2 * 1 * 4 * 1024 * 128 * 2  # GQA-4 layer caches, batch 32 / 1
    assert resolve_grouped_decode("auto", torch.device("cuda"), big) == ("triton" if triton is not None else "matmul")
    assert resolve_grouped_decode("auto", torch.device("cuda"), small) == "matmul"
    assert resolve_grouped_decode("matmul", torch.device("cuda")) == "matmul"
    with pytest.raises(ValueError, match="grouped_decode='fast' is not one of"):
        resolve_grouped_decode("fast", torch.device("cpu"))
    model = build_model("llama-tiny-gqa4")
    model.setup_cache(1, 8)
    assert {layer.mixer.grouped_decode for layer in model.layers} == {"matmul"}


def test_mha_decodes_with_sdpa_where_the_triton_kernel_does_not_apply():
    """grouped_decode="triton" (or "auto" on CUDA) sends MHA through the Triton kernel; where the
    kernel does not run (here: CPU without the interpreter) MHA keeps SDPA, not the matmul fallback."""
    from unittest import mock

    import frugalformers.nn.attention as attention
    from frugalformers import build_model

    model = build_model("llama-tiny").eval()
    assert all(layer.mixer.n_kv_heads == layer.mixer.n_heads for layer in model.layers)  # MHA
    with pytest.warns(UserWarning, match="falls back to the matmul path here"):
        model.setup_cache(1, 8, grouped_decode="triton")
    ids = torch.randint(5, 100, (1, 8))
    with torch.no_grad(), mock.patch.object(attention, "grouped_decode_attention") as grouped:
        model(ids[:, :4], input_pos=torch.arange(4))
        model(ids[:, 4:5], input_pos=torch.tensor([4]))
    assert grouped.call_count == 0


def test_sdpa_stays_off_cudnn_only_where_its_backward_fails(monkeypatch):
    """pytorch/pytorch#196678: cuDNN's SDPA backward returns NaN grad_q for masked calls whose key
    length is 64 mod 128 on H100 / H200; `sdpa` takes those to another backend, the same values."""
    from frugalformers.nn import attention

    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 4, 1088, 8), torch.randn(2, 4, 1088, 8)
    mask = torch.zeros(2, 1, 5, 1088)
    assert not attention.cudnn_backward_unsafe(q, k, mask)  # not CUDA
    cuda_q = type("CudaLike", (), {"is_cuda": True})()
    assert attention.cudnn_backward_unsafe(cuda_q, k, mask)
    assert not attention.cudnn_backward_unsafe(cuda_q, k, None)  # no mask: not the bug
    assert not attention.cudnn_backward_unsafe(cuda_q, k[:, :, :1024], mask)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    monkeypatch.setattr(attention, "cudnn_backward_unsafe", lambda *a: True)  # the guarded path, on the CPU
    torch.testing.assert_close(attention.sdpa(q, k, v, attn_mask=mask), ref)
    compiled = torch.compile(lambda *t: attention.sdpa(*t, attn_mask=mask), fullgraph=True)  # no graph break
    torch.testing.assert_close(compiled(q, k, v), ref)
    k1, v1 = k[:, :1], v[:, :1]  # multi-query: expanded on the guarded path (the efficient kernel has no GQA)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k1, v1, attn_mask=mask, enable_gqa=True)
    torch.testing.assert_close(attention.sdpa(q, k1, v1, attn_mask=mask, enable_gqa=True), ref)
