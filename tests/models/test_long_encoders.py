"""LongT5 / CoLT5 faithfulness: position information inside local windows, CoLT5's multi-query
cross-attention (self-attention multi-head), and the router solver option."""

import pytest
import torch

from frugalformers import build_model
from frugalformers.presets import get_preset


@pytest.mark.parametrize("preset", ["colt5-tiny", "longt5-local-tiny", "longt5-tiny", "t5-tiny"])
def test_permuting_tokens_within_a_window_changes_the_encoder_output(preset):
    """Without a position signal, permuting tokens inside one local window only permutes the output
    (colt5-tiny's encoder did that before the local and heavy biases: a difference of 7e-7)."""
    torch.manual_seed(0)
    model = build_model(preset, head="encoder").eval()
    with torch.no_grad():
        for m in model.modules():  # HF-style inits may start a bias table at zero: give them values
            if m.__class__.__name__ == "RelativePositionBias":
                m.weight.normal_()
    ids = torch.randint(5, 200, (1, 64))
    perm = torch.arange(64)
    perm[:8] = perm[:8].flip(0)  # reverse 8 tokens inside the first window (radius 15)
    with torch.no_grad():
        permuted_output = model(ids).hidden[:, perm]
        output_of_permuted = model(ids[:, perm]).hidden
    assert (permuted_output - output_of_permuted).abs().max() > 1e-2


def test_colt5_cross_attention_is_multi_query_and_self_attention_multi_head():
    config = get_preset("colt5-tiny")
    assert config.cross_kv_heads == 1 and config.kv_heads == config.n_heads
    model = build_model("colt5-tiny")
    layer = model.decoder.layers[0]
    assert layer.cross.n_kv_heads == 1 and layer.mixer.n_kv_heads == config.n_heads
    with pytest.raises(ValueError, match="cross_n_kv_heads=3 applies to family 't5' only"):
        get_preset("llama-tiny").replace(cross_n_kv_heads=3)


@pytest.mark.parametrize("solver, runs", [("exact", "soft_topk_select"), ("iterative", "soft_topk")])
def test_router_solver_option_changes_what_runs(solver, runs, monkeypatch):
    from frugalformers.nn import routed

    calls = {"soft_topk": 0, "soft_topk_select": 0}
    for name in calls:
        real = getattr(routed, name)

        def counted(*a, _real=real, _name=name, **k):
            calls[_name] += 1
            return _real(*a, **k)

        monkeypatch.setattr(routed, name, counted)
    base = get_preset("colt5-tiny")
    model = build_model(base.replace(head="encoder", options={**base.options, "router_solver": solver})).eval()
    with torch.no_grad():
        model(torch.randint(5, 200, (2, 64)))
    routers = sum(1 for m in model.modules() if isinstance(m, routed.Router))
    assert calls[runs] == routers and sum(calls.values()) == routers
    with pytest.raises(ValueError, match="solver='newton'"):
        routed.Router(16, solver="newton")


def test_both_solvers_give_the_same_encoder_output():
    base = get_preset("colt5-tiny")
    torch.manual_seed(0)
    exact = build_model(base.replace(head="encoder", options={**base.options, "router_solver": "exact"})).eval()
    iterative = build_model(exact.config.replace(options={**base.options, "router_solver": "iterative"})).eval()
    iterative.load_state_dict(exact.state_dict())
    # distinct tokens per row: a repeated token scores the same in layer 0 (the router reads the
    # embedding), and the solvers may break such a tie at the m-th place differently
    ids = torch.stack([torch.randperm(190)[:64] + 5 for _ in range(2)])
    with torch.no_grad():
        torch.testing.assert_close(exact(ids).hidden, iterative(ids).hidden, atol=1e-4, rtol=1e-4)
