"""GPU correctness: fast paths against reference paths on CUDA, where the CPU suite cannot reach
(skipped without a GPU; on the device: `python -m pytest tests/gpu -m gpu -s`).

Relative error ||fast - ref|| / ||ref|| of SDPA attention vs the explicit-softmax reference (fp32
reference on upcast inputs), for MHA / GQA / MQA, with and without padding and causal masks, in
fp32 and bf16; cached decoding vs a full forward for the decoder family (each decode attention
path); the grouped-GEMM dispatch of MoE (dropless) and MoWE (also past one call's group limit) and
the fused MoWE kernels; the Triton decode attention in bf16; every Fourier mixing implementation,
eager and compiled; `generate(compile=True)` vs eager generation; the lazy AdamW kernel.
"""

from __future__ import annotations

import pytest
import torch

from frugalformers import build_model
from frugalformers.bench import format_table, hardware
from frugalformers.nn import Attention

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="GPU correctness checks need CUDA (run them on the device)"
    ),
]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def record(rows: list[dict], check: str, err: float, limit: float, **cols) -> bool:
    """Add a row; True when the error is under its limit."""
    rows.append({"check": check, **cols, "rel err": err, "limit": limit})
    return err < limit


def check_attention(dev: str, smoke: bool, rows: list[dict]) -> bool:
    """SDPA attention vs the explicit-softmax reference: MHA / GQA / MQA, causal, padded, fp32 / bf16."""
    ok = True
    n = 64 if smoke else 1000  # attention check length
    for H, G in ((16, 16), (16, 4), (16, 1)):
        for causal in (False, True):
            for padded in (False, True):
                for dtype in (torch.float32, torch.bfloat16):
                    attn = Attention(1024, H, G, causal=causal).to(dev).eval()
                    x = torch.randn(4, n, 1024, device=dev)
                    mask = None
                    if padded:
                        mask = torch.ones(4, n, dtype=torch.bool, device=dev)
                        mask[1, (7 * n) // 10 :] = False
                    with torch.no_grad(), torch.autocast(dev, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                        fast = attn(x, key_padding_mask=mask)
                    attn.impl = "reference"
                    with torch.no_grad():
                        ref = attn(x, key_padding_mask=mask)
                    err = rel(fast, ref)
                    limit = 1e-3 if dtype == torch.float32 else 2e-2  # tf32-free fp32; bf16 operands
                    cols = {"heads": f"{H}/{G}", "causal": causal, "padded": padded, "dtype": str(dtype).split(".")[-1]}
                    ok &= record(rows, "attention sdpa vs reference", err, limit, **cols) and bool(
                        torch.isfinite(fast).all()
                    )
    return ok


def check_decoding(dev: str, smoke: bool, rows: list[dict]) -> bool:
    """Cached decoding vs a full forward, with each decode attention path."""
    ok = True
    model = decoder(dev)
    ids = torch.randint(0, 8192, (2, 64), device=dev)
    for options in ({}, {"grouped_decode": "matmul"}, {"grouped_decode": "triton"}):  # "auto" and both paths
        for dtype in (torch.float32, torch.bfloat16):
            with torch.no_grad(), torch.autocast(dev, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                full = model(ids).logits
                model.setup_cache(2, 64, **options)
                steps = [model(ids[:, :16], input_pos=torch.arange(16, device=dev)).logits]
                for t in range(16, 64):
                    steps.append(model(ids[:, t : t + 1], input_pos=torch.tensor([t], device=dev)).logits)
                model.clear_cache()
            err, limit = rel(torch.cat(steps, 1), full), 1e-3 if dtype == torch.float32 else 3e-2
            name = "decoder cached decode vs full" + "".join(f", {k}={v}" for k, v in options.items())
            ok &= record(rows, name, err, limit, heads="8/2", dtype=str(dtype).split(".")[-1])
    return ok


def check_experts(dev: str, smoke: bool, rows: list[dict]) -> bool:
    """The grouped-GEMM dispatch of MoE (dropless) and MoWE (also past one call's group limit), and
    the fused MoWE kernels in bf16 (output and every gradient, dense and row-sparse)."""
    ok = True
    # the grouped-GEMM dispatch (torch._grouped_mm, bf16 rows under autocast) vs the per-token loops
    from frugalformers.models.recipe import MixContext
    from frugalformers.nn.moe import MoEFeedForward
    from frugalformers.nn.word_experts import WordExpertBank, WordExperts

    torch.manual_seed(0)
    moe = MoEFeedForward(256, 512, n_experts=8, routing="dropless").to(dev).eval()
    x = torch.randn(4, 128, 256, device=dev)
    with torch.no_grad():
        ref = moe(x)[0]  # float32: the padded batched matmul
        with torch.autocast(dev, dtype=torch.bfloat16):
            fast = moe(x)[0]  # bf16 rows: torch._grouped_mm
    ok &= record(rows, "MoE dropless grouped GEMM (bf16) vs fp32", rel(fast, ref), 3e-2, dtype="bfloat16")
    layer = WordExperts(WordExpertBank(4096, 256, 64), skip_top=16).to(dev)
    ids = torch.randint(0, 20000, (2, 64), device=dev)
    xw = torch.randn(2, 64, 256, device=dev)
    with torch.no_grad(), torch.autocast(dev, dtype=torch.bfloat16):
        fast = layer(xw, MixContext(extras={"word_ids": ids}))
    ref = layer.reference_forward(xw, ids)
    ok &= record(rows, "MoWE grouped GEMM (bf16) vs per-token loop", rel(fast, ref), 3e-2, dtype="bfloat16")
    # more touched experts than one grouped-GEMM call takes (MAX_GROUPS): the split path on CUDA
    d_w, rows_w = (16, 128) if smoke else (256, 1024)
    big = WordExperts(WordExpertBank(32768, d_w, 64), skip_top=16).to(dev)
    ids = torch.randint(0, 200000, (4, rows_w), device=dev)
    xw = torch.randn(4, rows_w, d_w, device=dev)
    with torch.no_grad(), torch.autocast(dev, dtype=torch.bfloat16):
        fast = big(xw, MixContext(extras={"word_ids": ids}))
    ok &= record(rows, "MoWE grouped GEMM, > 512 experts touched", rel(fast, big.reference_forward(xw, ids)), 3e-2,
                 dtype="bfloat16")  # fmt: skip
    # the fused kernels (the default where Triton runs) against the unfused path in float32, with
    # gradients: a bf16 bank with row-sparse gradients (mowe-base) and an fp32 bank with dense ones
    from frugalformers.kernels.word_experts import fused_applies

    E, d, T = (256, 64, 64) if smoke else (8192, 768, 512)
    for dtype, sparse in (("bfloat16", True), ("float32", False)):
        torch.manual_seed(0)
        with torch.device(dev):
            fused = WordExperts(WordExpertBank(E, d, 64, dtype=dtype, sparse_grad=sparse), skip_top=16)
            ref_layer = WordExperts(WordExpertBank(E, d, 64), skip_top=16, impl="unfused")
        if not fused_applies(xw, fused.bank.w_in, fused.bank.activation):
            continue  # (a CPU dry run has no Triton to run)
        with torch.no_grad():
            ref_layer.bank.w_in.copy_(fused.bank.w_in.float())
            ref_layer.bank.w_out.copy_(fused.bank.w_out.float())
        ids = torch.randint(0, 200000, (8, T), device=dev)
        x1 = torch.randn(8, T, d, device=dev, requires_grad=True)
        x2 = x1.detach().clone().requires_grad_()
        g = torch.randn(8, T, d, device=dev)
        with torch.autocast(dev, dtype=torch.bfloat16):
            y1 = fused(x1, MixContext(extras={"word_ids": ids}))
        y2 = ref_layer(x2, MixContext(extras={"word_ids": ids}))  # float32 throughout
        (y1 * g).sum().backward()
        (y2 * g).sum().backward()
        dense = [t.grad.to_dense() if t.grad.is_sparse else t.grad for t in (fused.bank.w_in, fused.bank.w_out)]
        for what, a, b in (("output", y1, y2), ("dx", x1.grad, x2.grad), ("dW_in", dense[0], ref_layer.bank.w_in.grad),
                           ("dW_out", dense[1], ref_layer.bank.w_out.grad)):  # fmt: skip
            name = f"MoWE fused kernels {what}, {dtype} bank{', row-sparse grad' if sparse else ''} vs unfused fp32"
            ok &= record(rows, name, rel(a.float(), b), 3e-2, dtype="bfloat16")
    return ok


def check_decode_attention(dev: str, smoke: bool, rows: list[dict]) -> bool:
    """The Triton decode attention in bf16 at the benchmark's sizes."""
    ok = True
    # the Triton decode attention in bf16 at the benchmark's sizes (cache splits and their combine for MQA),
    # with the causal mask of a step and a padded batch row, against the float32 reference
    from frugalformers.kernels.decode_attention import decode_attention
    from frugalformers.kernels.triton_support import runs_on
    from frugalformers.nn.attention import build_attention_mask, reference_attention

    shapes = ((4, 16, 4, 1032), (32, 16, 1, 1032), (8, 16, 16, 520)) if not smoke else ((2, 8, 2, 64),)
    for B, H, G, S in shapes if runs_on(torch.device(dev)) else ():  # (a CPU dry run has no Triton to run)
        q = torch.randn(B, H, 1, 128, device=dev, dtype=torch.bfloat16)
        kc, vc = (torch.randn(B, G, S, 128, device=dev, dtype=torch.bfloat16) for _ in range(2))
        keep = torch.ones(B, S, dtype=torch.bool, device=dev)
        keep[0, : S // 3] = False
        pos = torch.tensor([S - 9], device=dev)
        mask = build_attention_mask(keep, None, True, 1, S, torch.float32, dev, pos)
        ok &= record(rows, f"Triton decode attention B{B} H{H} G{G} S{S}",
                     rel(decode_attention(q, kc, vc, mask, 128**-0.5), reference_attention(
                         q.float(), kc.float(), vc.float(), mask, 128**-0.5)), 1e-2, dtype="bfloat16")  # fmt: skip
    return ok


def check_fourier(dev: str, smoke: bool, rows: list[dict]) -> bool:
    """Every Fourier mixing implementation, eager and compiled, bf16 autocast, vs fp64 fft2."""
    ok = True
    # Fourier mixing on the GPU: every implementation, eager and compiled, bf16 autocast, against fp64
    # (the models' default "auto" takes the DFT GEMMs on CUDA up to 512 tokens)
    from frugalformers.nn.mixing import FourierMixing

    xf = torch.randn(4, 64 if smoke else 512, 64 if smoke else 768, device=dev)
    ref = torch.fft.fft2(xf.double()).real
    for impl in ("fft", "rfft", "dft", "auto"):
        for compile_ in (False, True):
            mix = FourierMixing(impl=impl)
            fn = torch.compile(mix, dynamic=False) if compile_ else mix
            with torch.no_grad(), torch.autocast(dev, dtype=torch.bfloat16):
                out = fn(xf)
            name = f"FourierMixing {impl}{' compiled' if compile_ else ''} (bf16 autocast) vs fp64 fft2"
            ok &= record(rows, name, rel(out, ref), 1e-2, dtype="bfloat16")
    return ok


def check_generate(dev: str, smoke: bool, rows: list[dict]) -> bool:
    """generate(compile=True) gives the eager step's greedy tokens, with each decode attention path."""
    ok = True
    model = decoder(dev)
    # generate(compile=True): the compiled, CUDA-graph step gives the eager step's greedy tokens
    from frugalformers.generate import generate

    prompts = [[5, 6, 7, 8], [9, 10]]
    # the Triton decode attention inside the compiled, captured step
    for options in ({}, {"grouped_decode": "matmul"}, {"grouped_decode": "triton"}):
        eager = generate(model, prompts, 24, decode_options=options)
        compiled = generate(model, prompts, 24, compile=True, decode_options=options)
        name = "generate(compile=True) tokens == eager" + "".join(f", {k}={v}" for k, v in options.items())
        ok &= record(rows, name, 0.0 if eager == compiled else 1.0, 0.5, heads="8/2", dtype="float32")
    return ok


def decoder(dev: str):
    torch.manual_seed(0)
    return build_model("llama-tiny-gqa4", d_model=512, d_ff=1024, n_heads=8, n_kv_heads=2).to(dev).eval()


def check_lazy_adamw(dev: str, smoke: bool, rows: list[dict]) -> bool:
    """RowSparseAdamW's Triton update of a row-sparse bf16 bank (on CUDA) against its torch update:
    float32 master rows and moments after a few steps, and the bf16 parameter exactly its master
    rows rounded to nearest (the interpreter truncates, so only the GPU checks this)."""
    from unittest import mock

    import frugalformers.train.row_sparse_adamw as rsa

    torch.manual_seed(0)
    E, R = (16, 300) if smoke else (4096, 768 * 64)
    start = torch.randn(E, R, device=dev).to(torch.bfloat16)
    params = [torch.nn.Parameter(start.clone()) for _ in range(2)]
    opts = []
    for p in params:
        p.row_sparse_grad = True
        opts.append(rsa.RowSparseAdamW([p], lr=1e-3, weight_decay=0.1))
    for _ in range(3):
        idx = torch.randint(0, E, (1, E // 2), device=dev)  # repeats: pieces of one row summed
        values = torch.randn(E // 2, R, device=dev).to(torch.bfloat16)
        for p in params:
            p.grad = torch.sparse_coo_tensor(idx, values, (E, R))
        opts[0].step()  # the Triton kernel where it runs
        with mock.patch.object(rsa, "lazy_kernel_applies", return_value=False):
            opts[1].step()  # torch ops
    a, b = (o.state[p] for o, p in zip(opts, params))
    ok = record(rows, "lazy AdamW kernel: master rows vs torch update", rel(a["master"], b["master"]), 1e-5,
                dtype="float32")  # fmt: skip
    ok &= record(rows, "lazy AdamW kernel: second moment vs torch update", rel(a["exp_avg_sq"], b["exp_avg_sq"]),
                 1e-5, dtype="float32")  # fmt: skip
    exact = (params[0].detach() != a["master"].to(torch.bfloat16)).float().mean().item() if not smoke else 0.0
    ok &= record(rows, "lazy AdamW kernel: bf16 bank = its master rows rounded (share differing)", exact, 1e-9,
                 dtype="bfloat16")  # fmt: skip
    return ok


CHECKS = {
    "attention": check_attention,
    "decoding": check_decoding,
    "experts": check_experts,
    "decode_attention": check_decode_attention,
    "fourier": check_fourier,
    "generate": check_generate,
    "lazy_adamw": check_lazy_adamw,
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_fast_path_matches_reference_on_cuda(name):
    rows: list[dict] = []
    ok = CHECKS[name]("cuda", False, rows)
    print(f"\n{format_table(rows)}\n{hardware()}")
    assert ok, format_table([r for r in rows if not r["rel err"] < r["limit"]])
