import pytest
import torch

from frugalformers import build_model
from frugalformers.models.recipe import MixContext
from frugalformers.nn.attention import Attention
from frugalformers.nn.local_attention import LocalAttention, band_mask
from frugalformers.nn.routed import RoutedAttention


@pytest.mark.parametrize("n, radius, G", [(50, 7, 4), (64, 15, 2), (300, 127, 4), (9, 3, 1), (128, 127, 4)])
def test_local_attention_equals_full_attention_with_a_band_mask(n, radius, G):
    local = LocalAttention(32, 4, radius=radius, n_kv_heads=G).eval()
    full = Attention(32, 4, n_kv_heads=G).eval()
    full.load_state_dict(local.state_dict())
    x = torch.randn(2, n, 32)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, n - 3 :] = False
    band = torch.zeros(1, 1, n, n).masked_fill(~band_mask(n, radius)[None, None], torch.finfo(torch.float32).min)
    with torch.no_grad():
        y = local(x, key_padding_mask=mask)
        ref = full(x, key_padding_mask=mask, attn_bias=band)
        local.impl = "reference"
        y_ref = local(x, key_padding_mask=mask)
    # compare the queries that see at least one real key
    visible = (band_mask(n, radius)[None] & mask[:, None, :]).any(-1)  # (B, n)
    assert (y - ref)[visible].abs().max() <= 1e-5 and (y_ref - ref)[visible].abs().max() <= 1e-5


def test_routed_attention_only_routed_queries_get_heavy_output():
    torch.manual_seed(0)
    attn = RoutedAttention(32, 1, 3, 8, radius=4, routed=4).eval()
    x = torch.randn(2, 40, 32)
    before = attn(x)
    qi, _ = attn.router_q(x, 4)
    with torch.no_grad():
        attn.heavy.o.weight.add_(torch.randn_like(attn.heavy.o.weight))
    changed = (attn(x) - before).abs().amax(-1) > 1e-7
    assert torch.equal(changed, torch.zeros(2, 40, dtype=torch.bool).scatter(1, qi, True))


def test_routed_attention_never_routes_padding_first_and_trains():
    attn = RoutedAttention(32, 1, 3, 8, radius=4, routed=4)
    x = torch.randn(2, 40, 32)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[:, 30:] = False
    qi, _ = attn.router_q(x, 4, mask)
    assert (qi < 30).all()
    attn(x, MixContext(key_padding_mask=mask)).sum().backward()
    assert attn.router_q.u.grad.abs().sum() > 0 and attn.router_kv.u.grad.abs().sum() > 0


def test_colt5_style_t5_runs_under_bf16_autocast():
    model = build_model(
        "t5-tiny", mixer="routed_attention", ffn="routed", options={"routed_tokens": 8, "local_radius": 15}
    )
    src = torch.randint(0, 8192, (2, 256))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(src, labels=torch.randint(0, 8192, (2, 8)))
    assert torch.isfinite(out.loss)
    assert not model.encoder.dense_attention  # no 256 x 256 relative bias is built
