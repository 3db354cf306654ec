import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from frugalformers.nn.routed import RoutedFeedForward, routed_count, soft_topk, soft_topk_exact, soft_topk_select


@pytest.mark.parametrize("k", [1.0, 3.0, 7.5])
def test_soft_topk_sums_to_k_and_stays_in_unit_interval(k):
    s = torch.randn(4, 40) * 3
    lam = soft_topk(s, k)
    assert torch.allclose(lam.sum(-1), torch.full((4,), k), atol=1e-3)
    assert (lam >= 0).all() and (lam <= 1 + 1e-6).all()
    # order preserving: a higher score never gets a smaller weight
    order = s.argsort(-1)
    assert (lam.gather(-1, order).diff(dim=-1) >= -1e-6).all()


@pytest.mark.parametrize("eps", [1.0, 0.5])
def test_soft_topk_solves_the_entropy_regularised_problem(eps):
    rng = np.random.default_rng(0)
    for _ in range(3):
        s = rng.normal(size=7) * 2
        k = 2.0

        def neg_objective(lam, s=s):
            lam = np.clip(lam, 1e-12, 1.0)
            return -(s @ lam - eps * np.sum(lam * np.log(lam)))

        res = minimize(
            neg_objective,
            np.full(7, k / 7),
            method="SLSQP",
            bounds=[(1e-9, 1.0)] * 7,
            constraints=[{"type": "eq", "fun": lambda lam, k=k: lam.sum() - k}],
            options={"ftol": 1e-12, "maxiter": 500},
        )
        ours = soft_topk(torch.tensor(s, dtype=torch.float64), k, eps=eps, iters=200).numpy()
        assert np.abs(ours - res.x).max() < 1e-3
        exact = soft_topk_exact(torch.tensor(s, dtype=torch.float64), k, eps=eps).numpy()
        assert np.abs(exact - res.x).max() < 1e-3


@pytest.mark.parametrize("n,k,scale", [(256, 16.0, 1.0), (256, 18.0, 3.0), (1024, 64.0, 2.0), (40, 30.5, 1.0)])
def test_exact_solver_equals_the_converged_iteration_forward_and_backward(n, k, scale):
    """The fast path (closed form) against the reference (the paper's coordinate descent)."""
    torch.manual_seed(0)
    s = (torch.randn(3, n, dtype=torch.float64) * scale).requires_grad_(True)
    g = torch.randn(3, n, dtype=torch.float64)
    ref = soft_topk(s, k, iters=2000)
    fast = soft_topk_exact(s, k)
    torch.testing.assert_close(fast, ref, rtol=1e-9, atol=1e-10)
    (g_ref,) = torch.autograd.grad((ref * g).sum(), s)
    (g_fast,) = torch.autograd.grad((fast * g).sum(), s)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-6, atol=1e-8)
    assert torch.allclose(fast.sum(-1), torch.full((3,), k, dtype=torch.float64))
    # the paper's 50 iterations have converged at these sizes (float32, as the router runs them)
    torch.testing.assert_close(soft_topk_exact(s.float(), k), soft_topk(s.float(), k), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k,m", [(16.0, 16), (18.0, 16), (5.0, 40)])
def test_select_equals_the_top_m_of_the_soft_topk(k, m):
    """The router's one-sort path: the top m of lambda, their indices and gradients."""
    torch.manual_seed(0)
    s = (torch.randn(3, 200, dtype=torch.float64) * 2).requires_grad_(True)
    g = torch.randn(3, m, dtype=torch.float64)
    ref_w, ref_i = soft_topk_exact(s, k).topk(m, dim=-1)
    idx, w = soft_topk_select(s, k, m)
    # lambda saturates at 1 for the top tokens: compare the chosen set, then the weights per token
    assert torch.equal(idx.sort(-1).values, ref_i.sort(-1).values)
    torch.testing.assert_close(w.gather(-1, idx.argsort(-1)), ref_w.gather(-1, ref_i.argsort(-1)))
    (g_ref,) = torch.autograd.grad((ref_w * g.gather(-1, ref_i.argsort(-1).argsort(-1))).sum(), s)
    (g_sel,) = torch.autograd.grad((w * g.gather(-1, idx.argsort(-1).argsort(-1))).sum(), s)
    torch.testing.assert_close(g_sel, g_ref)
    with pytest.raises(ValueError, match="k=0"):
        soft_topk_select(s, 0, m)


def test_exact_solver_gradcheck():
    s = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: soft_topk_exact(t, 2.0, eps=1.0), (s,))


def test_soft_topk_gradcheck():
    s = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: soft_topk(t, 2.0, eps=1.0, iters=30), (s,))


def test_only_routed_tokens_change_when_heavy_weights_change():
    torch.manual_seed(0)
    ffn = RoutedFeedForward(16, 8, 64, routed=4).eval()
    x = torch.randn(2, 20, 16)
    before = ffn(x)
    index, _ = ffn.router(x, 4)
    with torch.no_grad():
        for p in ffn.heavy.parameters():
            p.add_(torch.randn_like(p))
    after = ffn(x)
    changed = (after - before).abs().amax(-1) > 1e-7  # (B, n)
    routed = torch.zeros(2, 20, dtype=torch.bool).scatter(1, index, True)
    assert torch.equal(changed, routed) and routed.sum() == 8


def test_router_gets_gradient_through_the_weights():
    ffn = RoutedFeedForward(16, 8, 64, routed=0.25)
    ffn(torch.randn(2, 16, 16)).sum().backward()
    assert ffn.router.u.grad is not None and ffn.router.u.grad.abs().sum() > 0


@pytest.mark.parametrize("solver", ["exact", "iterative"])
def test_a_mostly_padded_row_keeps_finite_gradients(solver):
    """Fewer real tokens than k: the padding (score -1e4) must take mass, the offset a lifts the real
    scores by ~1e4, and min(1, exp(.)) must not become 0 * inf = NaN in the backward pass (it did on
    colt5-small's UL2 batches, whose short inputs are mostly padding)."""
    from frugalformers.nn.routed import Router

    torch.manual_seed(0)
    router = Router(16, solver=solver).train()  # k = 9/8 m in training
    x = torch.randn(2, 64, 16, requires_grad=True)
    mask = torch.zeros(2, 64, dtype=torch.bool)
    mask[0, :3], mask[1, :40] = True, True  # row 0: 3 real tokens for k = 9
    index, weight = router(x, 8, mask)
    assert (index[0, :3].sort().values == torch.arange(3)).all()  # the real tokens come first
    assert (weight[0, :3] == 1).all() and torch.isfinite(weight).all()
    (weight * torch.randn_like(weight)).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(router.u.grad).all()
    assert soft_topk_exact(torch.tensor([[300.0, -1e4, -1e4]]), 2.0)[0, 0] == 1  # exp(>88) in float32 is inf


def test_routed_counts_and_bf16():
    assert routed_count(16384, 1 / 16) == 1024 and routed_count(100, 512) == 100 and routed_count(64, 8) == 8
    ffn = RoutedFeedForward(16, 8, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ffn(torch.randn(2, 64, 16))
    assert torch.isfinite(y.float()).all()
    with pytest.raises(ValueError, match="k=0"):
        soft_topk(torch.randn(3), 0)


def test_t5_with_routed_ffn_layers_trains():
    from frugalformers import build_model

    model = build_model("t5-tiny", ffn="routed", options={"routed_tokens": 8})
    src = torch.randint(0, 8192, (2, 64))
    out = model(src, labels=torch.randint(0, 8192, (2, 8)))
    out.loss.backward()
    router = model.encoder.layers[0].ffn.router
    assert router.u.grad is not None and model.encoder.layers[0].ffn.heavy.w_out.weight.shape == (64, 512)


def _routed_models(**options):
    from frugalformers import build_model

    torch.manual_seed(0)
    base = build_model("colt5-tiny", head="encoder").eval()
    other = build_model(base.config.replace(options={**base.config.options, **options})).eval()
    missing = other.load_state_dict(base.state_dict(), strict=False)
    return base, other, missing


def test_straight_through_gates_by_one_forward_and_keeps_the_router_gradient():
    from frugalformers.nn.routed import gate

    w = torch.tensor([0.2, 0.9], requires_grad=True)
    g = gate(w, straight_through=True)
    assert g.tolist() == [1.0, 1.0]
    (g * torch.tensor([3.0, 5.0])).sum().backward()
    assert w.grad.tolist() == [3.0, 5.0]
    base, st, _ = _routed_models(router_straight_through=True)
    ids = torch.randint(5, 200, (2, 64))
    assert not torch.allclose(base(ids).hidden, st(ids).hidden)  # the heavy outputs are no longer scaled
    st.train()
    st(ids).hidden.square().mean().backward()
    assert all(
        r.u.grad is not None and r.u.grad.abs().sum() > 0
        for r in (m.router for m in st.modules() if hasattr(m, "router"))
    )


def test_heavy_position_bias_is_a_table_that_changes_only_the_heavy_branch():
    base, plain, loaded = _routed_models(heavy_position_bias=False)  # the presets' default: with the table
    assert all(k.endswith("mixer.heavy_bias.weight") for k in loaded.unexpected_keys) and loaded.unexpected_keys
    ids = torch.randint(5, 200, (2, 64))
    with torch.no_grad():
        for m in base.modules():
            if getattr(m, "heavy_bias", None) is not None:
                m.heavy_bias.weight.zero_()
        same = base(ids).hidden
        for m in base.modules():
            if getattr(m, "heavy_bias", None) is not None:
                m.heavy_bias.weight.normal_()
        moved = base(ids).hidden
    torch.testing.assert_close(same, plain(ids).hidden)  # a zero bias is no bias
    assert not torch.allclose(moved, same)
    base.train()
    base(ids).hidden.square().mean().backward()
    assert all(m.heavy_bias.weight.grad.abs().sum() > 0 for m in base.modules() if getattr(m, "heavy_bias", None))


def test_routers_can_score_the_residual_stream():
    base, residual, _ = _routed_models(router_input="residual")
    ids = torch.randint(5, 200, (2, 64))
    with torch.no_grad():
        a, b = base(ids).hidden, residual(ids).hidden
    assert a.shape == b.shape and not torch.allclose(a, b)  # the routing decisions differ
    from frugalformers.nn.routed import RoutedFeedForward

    with pytest.raises(ValueError, match="router_input='raw'"):
        RoutedFeedForward(16, 8, 64, router_input="raw")


def test_router_scores_in_float32_under_autocast():
    """The paper's router runs in float32: under bf16 autocast its scores, normalised weights and
    choices equal the float32 router's (a bf16 matmul of the scores would round them)."""
    from frugalformers.nn.routed import Router

    torch.manual_seed(0)
    router = Router(64).eval()
    x = torch.randn(2, 300, 64)
    ref_i, ref_w = router(x, 20)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        idx, w = router(x, 20)
    assert torch.equal(idx, ref_i)
    torch.testing.assert_close(w, ref_w, rtol=0, atol=0)
