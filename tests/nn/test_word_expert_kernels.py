"""The fused word-expert kernels (`nn.word_expert_kernels`) against the per-token loop, in Triton's
interpreter on CPU (fp32, and fp16 products from fp32 inputs as autocast gives them; bf16 runs on
the GPU, `benchmarks/cuda_checks.py`), and compiled for sm_90 by Triton's own compiler."""

import re

import torch

from frugalformers.nn.word_expert_kernels import expert_tiles


def test_tiles_cover_every_row_once_with_at_most_16_rows_of_one_expert():
    counts = torch.tensor([0, 3, 0, 40, 16, 17, 0, 1])
    present, offs, tile_u, tile_r0 = expert_tiles(counts)
    assert present.tolist() == [1, 3, 4, 5, 7] and offs.tolist() == [0, 3, 43, 59, 76, 77]
    covered = []
    for u, r0 in zip(tile_u.tolist(), tile_r0.tolist()):
        covered += list(range(r0, min(r0 + 16, offs[u + 1].item())))
    assert covered == list(range(77))  # every sorted row in exactly one tile, in order
    assert tile_u.tolist() == [0, 1, 1, 1, 2, 3, 3, 4]


def test_fused_kernels_equal_the_per_token_loop(run_interpreted):
    """Output, input gradient and both bank gradients (dense and row-sparse) for every activation,
    a frequent word's expert spread over several tiles, d not a multiple of the 128-column block,
    fp32 and fp16 products; a frozen bank gets no gradient and skips its gradient kernel."""
    out = run_interpreted(
        """
        import torch
        from unittest import mock
        import frugalformers.nn.word_expert_kernels as wk
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
        counts = torch.bincount(expert, minlength=E)
        for act in ("gelu_new", "gelu", "relu", "silu"):
            for sparse, compute in ((False, torch.float32), (True, torch.float32), (True, torch.float16)):
                x = torch.randn(N, D, requires_grad=True)
                w_in = torch.nn.Parameter(torch.randn(E, D, DE) * D**-0.5)
                w_out = torch.nn.Parameter(torch.randn(E, DE, D) * DE**-0.5)
                y = wk.word_expert_ffn(x, token, counts, w_in, w_out, act, sparse, compute)
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
            wk.word_expert_ffn(x, token, counts, w_in, w_out, "gelu_new", True).sum().backward()
        assert spy.__getitem__.call_count == 0 and x.grad is not None and w_in.grad is None
        print("ok")
        """
    )
    assert out.strip().endswith("ok")


def test_mowe_layer_takes_the_fused_path_and_equals_its_reference(run_interpreted):
    """Where Triton runs, a MoWE layer with a row-sparse bank goes through the fused kernels and
    gives the per-token loop's output; `impl="unfused"` gives the same through the gathered path."""
    out = run_interpreted(
        """
        import torch
        from unittest import mock
        import frugalformers.nn.word_expert_kernels as wk
        from frugalformers.models.recipe import MixContext
        from frugalformers.nn.word_experts import WordExpertBank, WordExperts
        torch.manual_seed(0)
        layer = WordExperts(WordExpertBank(512, 32, 16, sparse_grad=True), skip_top=16)
        x = torch.randn(2, 40, 32, requires_grad=True)
        ids = torch.randint(0, 2000, (2, 40))
        ctx = MixContext(extras={"word_ids": ids})
        with mock.patch.object(wk, "WordExpertFFN", wraps=wk.WordExpertFFN) as spy:
            y = layer(x, ctx)
        assert spy.apply.call_count == 1
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
    from frugalformers.nn import word_expert_kernels as wk

    meta = dict(ACT=2, IEEE=False, CAST=1, DE=64, BLOCK_M=16, BLOCK_D=128)
    f32, bf, i32 = "*fp32", "*bf16", "*i32"
    tiles = {"tile_u_ptr": i32, "tile_r0_ptr": i32, "offs_ptr": i32, "present_ptr": i32, "token_ptr": i32}
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
                "token_ptr": i32,
            },
        ),  # fmt: skip
    )
    for kernel, types in kernels:
        consts = {**meta, "WGRAD": True} if kernel is wk._input_grad_kernel else meta
        compiled = compile_for_hopper(kernel, types, consts, num_stages=3, aligned=("D",))
        assert len(re.findall("async_copy_global_to_local", compiled.asm["ttgir"])) >= 2, kernel.fn.__name__
        assert "mma" in compiled.asm["ptx"]
