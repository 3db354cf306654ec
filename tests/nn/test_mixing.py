import numpy as np
import pytest
import torch

from frugalformers import build_model
from frugalformers.layout import layer_recipe, layout_layers
from frugalformers.models.recipe import MixContext
from frugalformers.nn.mixing import FourierMixing, IdentityMixing, LinearMixing, RandomMixing


@pytest.mark.parametrize("impl", ["fft", "rfft", "dft"])
@pytest.mark.parametrize("shape", [(2, 16, 12), (3, 50, 24), (1, 7, 5), (2, 9, 768)])
def test_fourier_equals_numpy_fft2_forward_and_backward(impl, shape):
    x64 = torch.randn(*shape, dtype=torch.float64)
    g64 = torch.randn(*shape, dtype=torch.float64)
    x = x64.float().requires_grad_()
    y = FourierMixing(impl)(x)
    ref = np.fft.fft2(x64.numpy(), axes=(-2, -1)).real
    scale = np.abs(ref).max()
    assert np.abs(y.detach().double().numpy() - ref).max() / scale < 1e-6
    (y * g64.float()).sum().backward()
    # y = Re(F_s X F_h) with symmetric DFT matrices, so dL/dX = Re(F_s G F_h) = Re(fft2(G))
    grad_ref = np.fft.fft2(g64.numpy(), axes=(-2, -1)).real
    assert np.abs(x.grad.double().numpy() - grad_ref).max() / np.abs(grad_ref).max() < 1e-6


@pytest.mark.parametrize("impl", ["fft", "rfft", "dft"])
def test_fourier_under_bf16_autocast(impl):
    x = torch.randn(2, 32, 16)
    ref = np.fft.fft2(x.double().numpy(), axes=(-2, -1)).real
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = FourierMixing(impl)(x)
    rel = np.linalg.norm(y.float().double().numpy() - ref) / np.linalg.norm(ref)
    assert rel < 2e-2
    g = torch.randn_like(x)
    xr = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = FourierMixing(impl)(xr)
    (out.float() * g).sum().backward()
    grad_ref = np.fft.fft2(g.double().numpy(), axes=(-2, -1)).real
    assert np.linalg.norm(xr.grad.double().numpy() - grad_ref) / np.linalg.norm(grad_ref) < 2e-2


def test_auto_is_fft_on_cpu():
    m = FourierMixing("auto")
    assert m.resolved_impl(torch.randn(1, 8, 4)) == "fft"


def test_bad_impl_and_padding_are_named():
    with pytest.raises(ValueError, match="impl='cufft'"):
        FourierMixing("cufft")
    with pytest.raises(ValueError, match="padding='zero'"):
        FourierMixing(padding="zero")


def test_fixed_padding_outputs_do_not_depend_on_batch_composition():
    model = build_model("fnet-tiny", head="base").eval()
    a = torch.randint(10, 8192, (1, 128))
    others = torch.randint(10, 8192, (3, 128))
    with torch.no_grad():
        alone = model(a).hidden
        in_batch = model(torch.cat([others[:1], a, others[1:]])).hidden[1:2]
    assert torch.equal(alone, in_batch)


def test_masked_padding_keeps_pad_content_out_of_real_tokens():
    m = FourierMixing(padding="masked")
    x = torch.randn(2, 10, 8)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[:, 7:] = False
    y1 = m(x, MixContext(key_padding_mask=mask))
    x2 = x.clone()
    x2[:, 7:] = torch.randn(2, 3, 8) * 100  # different padding content
    y2 = m(x2, MixContext(key_padding_mask=mask))
    assert torch.allclose(y1, y2) and (y1[:, 7:] == 0).all()
    fixed = FourierMixing()  # the paper's behaviour: padding leaks into every token
    assert not torch.allclose(fixed(x), fixed(x2))


def test_linear_random_identity_mixing():
    lin = LinearMixing(6, 4)
    x = torch.randn(2, 6, 4)
    expected = torch.einsum("bij,jk,ni->bnk", x, lin.w_hidden, lin.w_seq)
    assert torch.allclose(lin(x), expected, atol=1e-6)
    with pytest.raises(ValueError, match="pad the input to max_seq_len=6"):
        lin(torch.randn(2, 5, 4))
    rnd = RandomMixing(6, 4, seed=3)
    assert not list(rnd.parameters()) and torch.equal(rnd.w_seq, RandomMixing(6, 4, seed=3).w_seq)
    assert "w_seq" in rnd.state_dict()  # saved with checkpoints
    assert torch.equal(IdentityMixing()(x), x)


def test_layout_rules_match_the_official_formulas():
    assert layout_layers(12, 2, "TOP") == [10, 11]
    assert layout_layers(12, 2, "BOTTOM") == [0, 1]
    assert layout_layers(12, 2, "MIDDLE") == [5, 6]
    assert layout_layers(12, 2, "MIXED") == [0, 6]
    assert layout_layers(14, 4, "TOP") == [10, 11, 12, 13]  # Sparse Mixer's attention layers
    assert layout_layers(14, 4, "MIDDLE") == [5, 6, 7, 8]  # Sparse Mixer's MoE layers
    assert layout_layers(14, 4, "BOTTOM") == [0, 1, 2, 3]
    assert layout_layers(14, 4, "MIXED") == [0, 3, 6, 9, 12]  # the official rule selects 5 here
    for L, n in ((12, 2), (14, 4), (24, 6)):
        expected = {
            "TOP": [i for i in range(L) if i >= L - n],
            "BOTTOM": [i for i in range(L) if i < n],
            "MIDDLE": [i for i in range(L) if L - n <= 2 * i < L + n],
            "MIXED": [i for i in range(L) if i % (L // n) == 0],
        }
        for layout, layers in expected.items():
            assert layout_layers(L, n, layout) == layers
    assert layer_recipe(4, "fourier", "attention", 1, "TOP") == ("fourier",) * 3 + ("attention",)


def test_fnet_presets():
    from frugalformers import count_parameters

    with torch.device("meta"):
        fnet = build_model("fnet-base", head="base")
        hybrid = build_model("fnet-hybrid-base", head="base")
    assert 82e6 < count_parameters(fnet) < 84e6  # FNet-Base ~83M (notes 1.1)
    assert hybrid.config.mixers()[-2:] == ("attention", "attention")
    assert set(hybrid.config.mixers()[:-2]) == {"fourier"}


def test_dft_mixing_compiles_once():
    """Under torch.compile the DFT matrices are built in the graph, not cached on the module (a
    cache filled inside the graph changes the module's state and forces a recompile)."""
    torch._dynamo.reset()
    mix = FourierMixing("dft")
    compiled = torch.compile(mix, dynamic=False, backend="eager")
    x = torch.randn(2, 16, 8)
    ref = np.fft.fft2(x.double().numpy(), axes=(-2, -1)).real
    from torch._dynamo.utils import counters

    counters.clear()
    for _ in range(3):
        y = compiled(x)
    assert counters["stats"]["unique_graphs"] == 1 and not mix._cache
    assert np.abs(y.double().numpy() - ref).max() / np.abs(ref).max() < 1e-5
