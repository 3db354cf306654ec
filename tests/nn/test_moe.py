import math

import pytest
import torch

from frugalformers import build_model
from frugalformers.nn.moe import (
    MoEFeedForward,
    capacity,
    num_groups,
    route_experts_choose,
    route_tokens_choose,
    switch_balance_loss,
    z_loss,
)


def loop_reference(moe: MoEFeedForward, x: torch.Tensor) -> torch.Tensor:
    """Per-token loop over the routing decisions: y_t = sum_e w_te * FFN_e(x_t)."""
    B, T, d = x.shape
    G = B if moe.per_example_groups else num_groups(B * T, moe.max_group_size)
    r = moe.route(x.reshape(G, -1, d))
    flat = x.reshape(-1, d)
    y = torch.zeros_like(flat)
    for t, e, w in zip(r.token.tolist(), r.expert.tolist(), r.weight.tolist()):
        y[t] += w * moe.expert_one(e, flat[t : t + 1])[0]
    return y.reshape(B, T, d)


@pytest.mark.parametrize(
    "routing, k", [("experts_choose", 1), ("tokens_choose", 1), ("tokens_choose", 2), ("dropless", 1), ("dropless", 2)]
)
@pytest.mark.parametrize("gated", [False, True])
def test_routed_output_equals_per_token_loop(routing, k, gated):
    moe = MoEFeedForward(
        16, 24, n_experts=4, routing=routing, top_k=k, min_capacity=1, max_group_size=12, gated=gated
    ).eval()
    x = torch.randn(3, 8, 16)
    y, _ = moe(x)
    assert (y - loop_reference(moe, x)).abs().max() < 1e-5


def test_experts_choose_fills_every_expert_to_capacity():
    probs = torch.randn(2, 64, 8).softmax(-1)
    C = capacity(1.0, 64, 8)
    token, weight, _ = route_experts_choose(probs, C)
    assert token.shape == (2, 8, C) and C == 8
    for g in range(2):
        for e in range(8):  # each expert holds exactly its C most probable tokens
            top = probs[g, :, e].topk(C).indices
            assert set(token[g, e].tolist()) == set(top.tolist())
    assert capacity(1.0, 4096, 16) == 256 and capacity(0.5, 4096, 16) == 128  # the official sizes
    assert capacity(1.0, 8, 16) == 4  # min_expert_capacity


def test_tokens_choose_respects_capacity_and_batch_prioritized_order():
    torch.manual_seed(0)
    probs = torch.randn(1, 40, 4).softmax(-1)
    C = 5
    expert, weight, keep = route_tokens_choose(probs, 1, C, bpr=True)
    for e in range(4):
        assert int((keep[..., 0] & (expert[..., 0] == e)).sum()) <= C
        chosen = (expert[0, :, 0] == e).nonzero().flatten()
        kept = chosen[keep[0, chosen, 0]]
        dropped = chosen[~keep[0, chosen, 0]]
        if len(dropped):  # every kept token outranks every dropped one (BPR)
            assert probs[0, kept, e].min() >= probs[0, dropped, e].max()
    _, _, keep_seq = route_tokens_choose(probs, 1, C, bpr=False)
    for e in range(4):  # without BPR the earliest tokens win
        chosen = (expert[0, :, 0] == e).nonzero().flatten()
        assert keep_seq[0, chosen, 0].tolist() == [i < C for i in range(len(chosen))]


def test_top1_choices_have_priority_over_top2():
    probs = torch.tensor([[[0.6, 0.4], [0.55, 0.45], [0.3, 0.7]]])  # capacity 1 per expert
    expert, _, keep = route_tokens_choose(probs, 2, 1, bpr=True)
    # top-1: token 0 -> e0 (kept), token 1 -> e0 (dropped: full), token 2 -> e1 (kept); top-2 all dropped
    assert keep[0, :, 0].tolist() == [True, False, True] and not keep[0, :, 1].any()


def test_losses_match_hand_computed_values():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    probs = logits.softmax(-1)
    expected_z = sum(math.log(sum(math.exp(v) for v in row)) ** 2 for row in logits[0].tolist()) / 3
    assert z_loss(logits).item() == pytest.approx(expected_z)
    top1 = probs.argmax(-1)  # experts 0, 1, 0
    f = torch.tensor([2 / 3, 1 / 3])
    P = probs[0].mean(0)
    assert switch_balance_loss(probs, top1[..., None]).item() == pytest.approx(2 * float((f * P).sum()))
    moe = MoEFeedForward(4, 8, n_experts=2, routing="tokens_choose", min_capacity=1)
    _, aux = moe(torch.randn(1, 6, 4))
    assert set(aux) == {"moe_balance", "moe_z"}  # weighted 0.01 and 1e-4


def official_balance_loss(probs: torch.Tensor, experts: torch.Tensor) -> float:
    """sparse_mixers/routing.py `_load_balancing_loss`, written out with loops: a token counts for
    every expert among its k choices; mean over groups and experts of f * P, times E^2."""
    G, T, E = probs.shape
    total = 0.0
    for g in range(G):
        for e in range(E):
            f = sum(e in experts[g, t].tolist() for t in range(T)) / T
            total += f * float(probs[g, :, e].mean())
    return total / (G * E) * E**2


def test_top_k_balance_loss_and_capacity_follow_the_official_formulas():
    torch.manual_seed(3)
    probs = torch.randn(2, 12, 4).softmax(-1)
    for k in (1, 2, 3):
        experts = probs.topk(k, dim=-1).indices
        assert switch_balance_loss(probs, experts).item() == pytest.approx(official_balance_loss(probs, experts))
    # MoeLayer: expert_capacity = max(round(cf * tokens_per_group / E), min_expert_capacity), whatever k is
    moe = MoEFeedForward(8, 16, n_experts=4, routing="tokens_choose", top_k=2, min_capacity=1, max_group_size=64)
    r = moe.route(torch.randn(1, 64, 8))
    assert torch.bincount(r.expert, minlength=4).max() <= round(1.0 * 64 / 4)
    assert capacity(1.25, 64, 4) == 20 and capacity(1.0, 64, 4, minimum=32) == 32


def test_gradients_reach_the_router_through_the_combine_weights():
    for routing in ("experts_choose", "tokens_choose"):
        moe = MoEFeedForward(8, 16, n_experts=4, routing=routing, min_capacity=1, z_loss_factor=0.0)
        y, _ = moe(torch.randn(2, 8, 8))
        y.sum().backward()
        assert moe.router.proj.weight.grad is not None and moe.router.proj.weight.grad.abs().sum() > 0


def test_dropless_equals_padded_tokens_choose_when_nothing_is_dropped():
    torch.manual_seed(1)
    a = MoEFeedForward(16, 24, n_experts=4, routing="tokens_choose", top_k=2, capacity_factor=100.0).eval()
    b = MoEFeedForward(16, 24, n_experts=4, routing="dropless", top_k=2).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 10, 16)
    assert torch.allclose(a(x)[0], b(x)[0], atol=1e-6)


def test_dropless_grouped_gemm_path_with_an_idle_expert(monkeypatch):
    """The dropless grouped-GEMM path (CUDA's; torch >= 2.9 has a CPU kernel of the same contract)
    equals the per-token loop forward and backward, also when an expert gets no token."""
    from frugalformers.nn import grouped_experts

    torch.manual_seed(0)
    moe = MoEFeedForward(16, 24, n_experts=4, routing="dropless", top_k=1).eval()
    with torch.no_grad():
        moe.router.proj.bias[3] = -100.0  # expert 3 is never anyone's top-1
    x = torch.randn(2, 8, 16, requires_grad=True)
    ref = loop_reference(moe, x)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    monkeypatch.setattr(grouped_experts, "grouped_mm_applies", lambda h, w: True)
    groups = []
    real = torch._grouped_mm
    monkeypatch.setattr(torch, "_grouped_mm", lambda a, b, offs: groups.append(b.shape[0]) or real(a, b, offs=offs))
    y, _ = moe(x)
    assert groups == [3, 3]  # the idle expert has no group
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    (g,) = torch.autograd.grad(y.square().sum(), x)
    torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # a router that spreads the tokens: every expert gets some (fixed seed)
        moe.router.proj.bias.zero_()
        moe.router.proj.weight.normal_(0, 1.0)
    x2 = torch.randn(2, 8, 16)
    groups.clear()
    y2, _ = moe(x2)
    assert groups == [4, 4]  # all experts present: the stacked weights as they are
    torch.testing.assert_close(y2, loop_reference(moe, x2), atol=1e-5, rtol=1e-5)


def test_per_example_groups_make_eval_independent_of_the_batch():
    moe = MoEFeedForward(16, 24, n_experts=4, min_capacity=1, per_example_groups=True).eval()
    x = torch.randn(3, 8, 16)
    assert torch.allclose(moe(x)[0][1:2], moe(x[1:2])[0], atol=1e-6)
    grouped = MoEFeedForward(16, 24, n_experts=4, min_capacity=1).eval()
    grouped.load_state_dict(moe.state_dict())
    assert not torch.allclose(grouped(x)[0][1:2], grouped(x[1:2])[0], atol=1e-6)


@pytest.mark.parametrize("routing", ["experts_choose", "tokens_choose", "dropless"])
def test_bf16_autocast_on_cpu(routing):
    """Under autocast the rows are dispatched in bf16 (half the bytes; CUDA's grouped GEMM needs
    bf16 operands) while the router reads the float32 input; the output is the input's dtype and
    matches the float32 layer to bf16 tolerance."""
    torch.manual_seed(0)
    moe = MoEFeedForward(16, 24, n_experts=4, routing=routing, min_capacity=1, expert_dropout=0.0)
    x = torch.randn(2, 8, 16)
    seen = []
    moe.experts = lambda h, f=moe.experts: seen.append(h.dtype) or f(h)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, aux = moe(x)
    assert y.dtype == torch.float32 and aux["moe_z"].dtype == torch.float32 and torch.isfinite(y).all()
    assert seen == [torch.bfloat16]
    ref, _ = moe(x)
    assert (y - ref).abs().max() < 2e-2 * ref.abs().max()


def test_group_count_rule():
    # the official rule: the smallest n >= N // max_group_size dividing N (a group can exceed the max)
    assert num_groups(8192, 4096) == 2 and num_groups(6000, 4096) == 1 and num_groups(7, 4096) == 1
    assert 12294 % num_groups(12294, 4096) == 0 and num_groups(12294, 4096) >= 3


def test_sparse_mixer_presets_follow_the_official_layout():
    c = build_model("sparse-mixer-base", head="base", vocab_size=64).config
    assert [i for i, m in enumerate(c.mixers()) if m == "attention"] == [10, 11, 12, 13]
    assert [i for i, f in enumerate(c.ffns()) if f == "moe"] == [5, 6, 7, 8]
    assert set(c.mixers()) == {"linear", "attention"} and c.options["n_experts"] == 16
    fast = build_model("fast-sparse-mixer-base", head="base", vocab_size=64).config
    assert fast.options["capacity_factor"] == 0.5


def test_bad_moe_arguments_are_named():
    with pytest.raises(ValueError, match="routing='hash'"):
        MoEFeedForward(8, 8, routing="hash")
    with pytest.raises(ValueError, match="top_k=5"):
        MoEFeedForward(8, 8, n_experts=4, top_k=5)
