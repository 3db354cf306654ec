"""The Triton decode GEMM (`nn.skinny_gemm`) against `F.linear`, run by Triton's interpreter on CPU
(`TRITON_INTERPRET=1` is read when Triton is imported, so these checks run in a fresh process).
The interpreter has no bfloat16 `tl.dot` (triton-lang/triton#11584: it multiplies the raw bits),
so bfloat16 is checked on the GPU (`benchmarks/cuda_checks.py`); float32 and float16 here."""

import pytest
import torch

from frugalformers import build_model


def test_kernel_equals_linear_across_shapes_masks_and_dtypes(run_interpreted):
    """Rows below the 16-row tile, N and K that the blocks do not divide, bias or none, fp32 (IEEE
    products) and fp16; the autotuned entry point and fixed block sizes."""
    out = run_interpreted(
        """
        import torch, torch.nn.functional as F
        from frugalformers.nn.skinny_gemm import skinny_linear, skinny_gemm_applies, _launch
        from unittest import mock
        import frugalformers.nn.skinny_gemm as sg
        torch.manual_seed(0)
        cases = [(1, 40, 50, True, None), (3, 100, 33, False, {"BLOCK_N": 16, "BLOCK_K": 64}),
                 (32, 64, 96, True, {"BLOCK_N": 32, "BLOCK_K": 16}), (64, 48, 20, True, {"BLOCK_N": 64, "BLOCK_K": 32})]
        for dtype, tol in ((torch.float32, 1e-5), (torch.float16, 2e-3)):
            for M, K, N, has_bias, config in cases:
                x = torch.randn(M, K).to(dtype)
                w = (torch.randn(N, K) / K**0.5).to(dtype)
                b = torch.randn(N).to(dtype) if has_bias else None
                assert skinny_gemm_applies(x, w)
                with mock.patch.object(sg, "_launch", wraps=_launch) as spy:
                    y = skinny_linear(x, w, b, config)
                assert spy.call_count == 1, "the kernel ran"
                ref = F.linear(x.double(), w.double(), None if b is None else b.double())
                err = ((y.double() - ref).abs().max() / ref.abs().max()).item()
                assert y.dtype == dtype and y.shape == (M, N) and err < tol, (dtype, M, K, N, err)
        x = torch.randn(2, 3, 64)  # leading dims are kept
        w = torch.randn(24, 64)
        torch.testing.assert_close(skinny_linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)
        assert not skinny_gemm_applies(torch.randn(65, 64), w)  # a prefill: cuBLAS
        assert not skinny_gemm_applies(torch.randn(4, 64), w.t().contiguous().t())  # a strided weight
        wg = w.clone().requires_grad_()
        assert not skinny_gemm_applies(x, wg)  # training: F.linear, which has a backward
        with torch.no_grad():
            assert skinny_gemm_applies(x, wg)
        print("ok")
        """
    )
    assert out.strip().endswith("ok")


def test_triton_decode_gemms_give_the_plain_decode_logits(run_interpreted, spy_decode_code):
    """A decoder decoding with `decode_gemm="triton"` (every decode projection through the kernel,
    the prefill's 90 rows through cuBLAS) gives the default decode's logits, step by step."""
    out = run_interpreted(
        spy_decode_code
        + """
from frugalformers import build_model
import frugalformers.nn.skinny_gemm as sg
torch.manual_seed(0)
model = build_model("llama-tiny-gqa4", d_model=64, d_ff=128, n_heads=4, n_kv_heads=2, n_layers=2).eval()
ids = torch.randint(5, 100, (3, 30))
fast, prefill, calls = spy_decode(model, sg, ids, decode_gemm="triton")
assert prefill == 0 and calls == 3 * 2 * 4, (prefill, calls)  # q/k/v, o, gate/up, down of 2 layers
plain, _, none = spy_decode(model, sg, ids)
assert none == 0
for a, b in zip(fast, plain):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
print("ok")
"""
    )
    assert out.strip().endswith("ok")


def test_decode_gemm_option_is_checked_and_falls_back_on_cpu():
    """Without the interpreter a CPU tensor takes F.linear (same logits); a bad option is an error
    that names the choices."""
    torch.manual_seed(0)
    model = build_model("llama-tiny-gqa4", d_model=64, d_ff=128, n_heads=4, n_kv_heads=2, n_layers=1).eval()
    with pytest.raises(ValueError, match="decode_gemm='cutlass' is not one of"):
        model.setup_cache(1, 8, decode_gemm="cutlass")
    ids = torch.randint(5, 100, (1, 8))
    with torch.no_grad():
        full = model(ids).logits
        with pytest.warns(
            UserWarning, match="the Triton decode kernels fall back to PyTorch here: the model is on cpu"
        ):
            model.setup_cache(1, 8, decode_gemm="triton")
        steps = [model(ids[:, t : t + 1], input_pos=torch.tensor([t])).logits for t in range(8)]
        model.clear_cache()
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-5)


def test_kernel_compiles_for_hopper_with_pipelined_loads():
    """Triton's own compiler (and the ptxas it ships) builds the kernel for sm_90 without a GPU:
    every block shape of the autotuning space compiles, in bf16 with and without bias and in
    fp32, and the weight loads are software-pipelined (asynchronous copies, one shared-memory
    buffer per stage in flight), which is what streaming the weight at bandwidth needs."""
    import re

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile

    from frugalformers.nn.skinny_gemm import _configs, _fitting, _skinny_kernel, shared_bytes

    bf16 = torch.empty(0, dtype=torch.bfloat16)
    fitting = _fitting(_configs(), {"x_ptr": bf16}, BLOCK_M=64)
    assert 0 < len(fitting) < len(_configs())  # the largest pipelines are left out before compiling
    assert all(shared_bytes(c, 64, 2) <= 227 * 1024 for c in fitting)
    names = ["x_ptr", "w_ptr", "b_ptr", "y_ptr", "M", "N", "K", "stride_xm", "stride_wn", "stride_ym"]
    aligned = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if n not in ("M",)}  # as the JIT sees it
    configs = {(c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]): c for c in _configs() if c.num_stages == 4}
    for (block_n, block_k), cfg in sorted(configs.items()):
        for dtype, bias in (("bf16", False), ("bf16", True), ("fp32", False)):
            sig = {n: (f"*{dtype}" if n.endswith("_ptr") else "i32") for n in names}
            sig.update(dict.fromkeys(["HAS_BIAS", "IEEE", "BLOCK_M", "BLOCK_N", "BLOCK_K", "PDL"], "constexpr"))
            consts = {"HAS_BIAS": bias, "IEEE": dtype == "fp32", "BLOCK_M": 32, "BLOCK_N": block_n, "BLOCK_K": block_k,
                      "PDL": False}  # fmt: skip
            kernel = compile(
                ASTSource(fn=_skinny_kernel, signature=sig, constexprs=consts, attrs=aligned),
                target=GPUTarget("cuda", 90, 32),
                options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages},
            )
            assert len(re.findall("async_copy_global_to_local", kernel.asm["ttgir"])) >= 2, (block_n, block_k, dtype)
            assert kernel.metadata.shared == shared_bytes(cfg, 32, 2 if dtype == "bf16" else 4)  # the pruning model
