"""The fused word-expert kernels (`kernels.word_experts`) against the per-token loop, in Triton's
interpreter on CPU (fp32, and fp16 products from fp32 inputs as autocast gives them; bf16 runs on
the GPU, `tests/gpu`), and compiled for sm_90 by Triton's own compiler."""

import re


def test_routing_sorts_by_expert_and_tiles_every_routed_row_once(run_interpreted):
    """`route_words` (hash + count, sort, prefix, tile map, no host sync) against torch: the sorted
    order is expert_of's stable argsort, the skipped tokens last; every routed row lies in exactly
    one tile of <= 16 rows of its own expert; the touched experts, their slots, the experts with
    several tiles and the totals."""
    out = run_interpreted(
        """
        import torch
        import frugalformers.kernels.word_experts as wk
        from frugalformers.nn.word_experts import expert_of
        torch.manual_seed(0)
        for N, E, skip in ((150, 40, 3), (300, 7, 16), (5, 1000, 0), (20, 9, 99)):
            ids = torch.randint(0, 60, (N,))
            ids[: N // 3] = 20  # a frequent word: several tiles of one expert
            r = wk.route_words(ids, E, skip)
            expert = torch.where(ids > skip, expert_of(ids, E), E)
            assert r.token.tolist() == expert.argsort(stable=True).tolist()
            counts = torch.bincount(expert, minlength=E + 1)[:E]
            P = int(counts.sum())
            assert r.offs.tolist() == [0] + counts.cumsum(0).tolist()
            U, n_tiles, n_multi = r.counts_on_host()
            assert U == int((counts > 0).sum()) and n_tiles == int(((counts + 15) // 16).sum()) <= r.max_tiles
            assert r.present[:U].tolist() == (counts > 0).nonzero().squeeze(-1).tolist()
            assert r.multi[:n_multi].tolist() == (counts > 16).nonzero().squeeze(-1).tolist()
            assert all(r.slot[e] == u for u, e in enumerate(r.present[:U].tolist()))
            sorted_expert = expert[r.token]
            covered = []
            for t in range(n_tiles):
                e = int(r.tile_e[t])
                r0 = int(r.offs[e]) + (t - int(r.tile_cum[e])) * 16
                rows = list(range(r0, min(r0 + 16, int(r.offs[e + 1]))))
                assert rows and (sorted_expert[rows] == e).all()
                covered += rows
            assert covered == list(range(P))  # every routed row once, in order
            assert (r.tile_e[n_tiles:] == E).all()  # the grid's spare programs find no expert
        print("ok")
        """
    )
    assert out.strip().endswith("ok")


def test_fused_kernels_equal_the_per_token_loop(run_interpreted):
    """Output, input gradient and both bank gradients (dense and row-sparse) for every activation,
    a frequent word's expert spread over several tiles, d not a multiple of the 128-column block,
    fp32 and fp16 products; a frozen bank gets no gradient and skips its gradient kernel."""
    out = run_interpreted(
        """
        import torch
        from unittest import mock
        import frugalformers.kernels.word_experts as wk
        from frugalformers.nn.ffn import activation_fn
        from frugalformers.nn.word_experts import expert_of
        torch.manual_seed(0)
        N, D, DE, E = 150, 200, 16, 40
        ids = torch.randint(0, 30, (N,))
        ids[:50] = 20  # one expert with 50 rows: 4 tiles
        routed = (ids > 3).nonzero().squeeze(-1)
        expert = expert_of(ids[routed], E)
        order = expert.argsort(stable=True)
        token, expert = routed[order], expert[order]
        routing = wk.route_words(ids, E, 3)
        for act in ("gelu_new", "gelu", "relu", "silu"):
            for sparse, compute in ((False, torch.float32), (True, torch.float32), (True, torch.float16)):
                x = torch.randn(N, D, requires_grad=True)
                w_in = torch.nn.Parameter(torch.randn(E, D, DE) * D**-0.5)
                w_out = torch.nn.Parameter(torch.randn(E, DE, D) * DE**-0.5)
                y = wk.word_expert_ffn(x, w_in, w_out, routing, act, sparse, compute)
                xr, wi, wo = (t.detach().clone().requires_grad_() for t in (x, w_in, w_out))
                c = lambda t: t.to(compute).float()  # operands rounded as the kernels round them
                h = torch.bmm(c(xr[token])[:, None], c(wi[expert]))
                ref = torch.zeros(N, D).index_copy(0, token, torch.bmm(c(activation_fn(act)(h)), c(wo[expert]))[:, 0])
                g = torch.randn(N, D)
                (y * g).sum().backward()
                (ref * g).sum().backward()
                assert y.dtype == torch.float32 and x.grad.dtype == torch.float32
                assert w_in.grad.is_sparse == sparse and w_out.grad.is_sparse == sparse
                tol = 1e-5 if compute == torch.float32 else 3e-3
                for a, b in ((y, ref), (x.grad, xr.grad), (w_in.grad, wi.grad), (w_out.grad, wo.grad)):
                    a = a.to_dense() if a.is_sparse else a
                    err = ((a - b).norm() / b.norm()).item()
                    assert err < tol, (act, sparse, compute, err)
                assert (y[(ids <= 3)] == 0).all()  # unrouted rows stay zero
        w_in.requires_grad_(False), w_out.requires_grad_(False)
        w_in.grad = w_out.grad = None
        x = torch.randn(N, D, requires_grad=True)
        with mock.patch.object(wk, "_weight_grad_kernel", wraps=wk._weight_grad_kernel) as spy:
            wk.word_expert_ffn(x, w_in, w_out, routing, "gelu_new", True).sum().backward()
        assert spy.__getitem__.call_count == 0 and x.grad is not None and w_in.grad is None
        print("ok")
        """
    )
    assert out.strip().endswith("ok")


def test_mowe_layer_takes_the_fused_path_and_equals_its_reference(run_interpreted):
    """Where Triton runs, a MoWE layer with a row-sparse bank goes through the fused kernels and
    gives the per-token loop's output (two layers of a stack route once); `impl="unfused"` gives the
    same through the gathered path."""
    out = run_interpreted(
        """
        import torch
        from unittest import mock
        import frugalformers.kernels.word_experts as wk
        from frugalformers.models.recipe import MixContext
        import frugalformers.nn.word_experts as we
        from frugalformers.nn.word_experts import WordExpertBank, WordExperts
        torch.manual_seed(0)
        layer = WordExperts(WordExpertBank(512, 32, 16, sparse_grad=True), skip_top=16)
        x = torch.randn(2, 40, 32, requires_grad=True)
        ids = torch.randint(0, 2000, (2, 40))
        ctx = MixContext(extras={"word_ids": ids})
        with mock.patch.object(wk, "WordExpertFFN", wraps=wk.WordExpertFFN) as spy, \
                mock.patch.object(we, "route_words", wraps=wk.route_words) as route:
            y = layer(x, ctx)
            y2 = layer(x * 2, ctx)  # a second MoWE layer of the stack: the routing is made once
        assert spy.apply.call_count == 2 and route.call_count == 1
        torch.testing.assert_close(y2, layer.reference_forward(x.detach() * 2, ids), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(y, layer.reference_forward(x.detach(), ids), rtol=1e-4, atol=1e-5)
        y.square().sum().backward()
        fused_grad = layer.bank.w_in.grad.to_dense()
        layer.bank.w_in.grad = None
        layer.impl = "unfused"
        layer(x, ctx).square().sum().backward()
        torch.testing.assert_close(layer.bank.w_in.grad.to_dense(), fused_grad, rtol=1e-4, atol=1e-6)
        print("ok")
        """
    )
    assert out.strip().endswith("ok")


def test_kernels_compile_for_hopper_with_pipelined_weight_loads(compile_for_hopper):
    """bf16 products of fp32 activations (autocast), a bf16 bank and d_e 64: each kernel's weight
    (or row) loads are software-pipelined, which streaming the touched experts at bandwidth needs."""
    from frugalformers.kernels import word_experts as wk

    meta = dict(ACT=2, IEEE=False, CAST=1, DE=64, BLOCK_M=16, BLOCK_D=128)
    f32, bf, i32, i64 = "*fp32", "*bf16", "*i32", "*i64"
    tiles = {"tile_e_ptr": i32, "tile_cum_ptr": i32, "offs_ptr": i32, "slot_ptr": i32, "token_ptr": i64,
             "totals_ptr": i32}  # fmt: skip
    kernels = (
        (wk._forward_kernel, {"x_ptr": f32, "w_in_ptr": bf, "w_out_ptr": bf, "y_ptr": f32, "pre_ptr": f32, **tiles}),
        (
            wk._input_grad_kernel,
            {
                "dy_ptr": f32,
                "x_ptr": f32,
                "w_in_ptr": bf,
                "w_out_ptr": bf,
                "pre_ptr": f32,
                "dpre_ptr": f32,
                "dx_ptr": f32,
                "g_in_ptr": bf,
                "g_out_ptr": bf,
                **tiles,
            },
        ),  # fmt: skip
        (
            wk._weight_grad_kernel,
            {
                "x_ptr": f32,
                "dy_ptr": f32,
                "pre_ptr": f32,
                "dpre_ptr": f32,
                "g_in_ptr": bf,
                "g_out_ptr": bf,
                "offs_ptr": i32,
                "slot_ptr": i32,
                "multi_ptr": i32,
                "token_ptr": i64,
            },
        ),  # fmt: skip
    )
    for kernel, types in kernels:
        consts = {**meta, "WGRAD": True} if kernel is wk._input_grad_kernel else meta
        compiled = compile_for_hopper(kernel, types, consts, num_stages=3, aligned=("D",))
        assert len(re.findall("async_copy_global_to_local", compiled.asm["ttgir"])) >= 2, kernel.fn.__name__
        assert "mma" in compiled.asm["ptx"]
    route_types = {"ids_ptr": i64, "expert_ptr": i32, "counts_ptr": i32}
    route = compile_for_hopper(wk._route_kernel, route_types, {"BLOCK": 1024})
    assert "atom" in route.asm["ptx"]
    names = ("counts_ptr", "offs_ptr", "tile_cum_ptr", "slot_ptr", "present_ptr", "multi_ptr", "totals_ptr")
    compile_for_hopper(wk._prefix_kernel, dict.fromkeys(names, i32), {"BLOCK_M": 16, "BLOCK": 4096}, num_warps=8)
