"""The Triton decode attention (`kernels.decode_attention`) against the float32 reference attention,
run by Triton's interpreter on CPU (fp32 and fp16; the interpreter has no bf16 dot, so bf16 is checked
on the GPU by `tests/gpu`), and compiled for sm_90 by Triton's own compiler (no GPU needed)."""

import re

import pytest
import torch

from frugalformers import build_model


def test_kernel_equals_reference_attention(run_interpreted):
    """GQA / MQA / MHA groups, 1-3 query positions, cache splits (their combine), a causal step
    mask, padded rows (one fully masked: the reference's uniform average), a per-head bias, no
    mask, fp32 and fp16, a cache longer than the tiles divide, cache tiles of 32 / 64 / 128."""
    out = run_interpreted(
        """
        import torch
        from frugalformers.nn.attention import build_attention_mask, reference_attention
        from frugalformers.kernels.decode_attention import decode_attention, decode_attention_applies
        torch.manual_seed(0)
        cases = [(2, 8, 2, 1, 100, 16, torch.float32, 1, "causal"), (2, 8, 2, 1, 300, 32, torch.float32, 3, "causal"),
                 (3, 4, 1, 2, 129, 16, torch.float32, 2, "pad"), (2, 8, 8, 1, 70, 16, torch.float16, 1, None),
                 (1, 6, 2, 3, 64, 16, torch.float32, 1, "bias"), (2, 4, 1, 1, 257, 16, torch.float16, 4, "causal")]
        launches = [None, {"BLOCK_S": 32, "num_stages": 4}, None, {"BLOCK_S": 128}, None, {"BLOCK_S": 32}]
        for (B, H, G, T, S, D, dtype, splits, kind), launch in zip(cases, launches):
            q = torch.randn(B, H, T, D).to(dtype)
            k, v = torch.randn(B, G, S, D).to(dtype), torch.randn(B, G, S, D).to(dtype)
            assert decode_attention_applies(q, k)
            pos = torch.arange(S - T - 5, S - 5)
            keep, bias = None, None
            if kind == "pad":
                keep = torch.ones(B, S, dtype=torch.bool)
                keep[1, :40] = False
                keep[2] = False  # every key of this row masked
            if kind == "bias":
                bias = torch.randn(1, H, T, S)
            mask = None if kind is None else build_attention_mask(keep, bias, True, T, S, torch.float32, "cpu", pos)
            got = decode_attention(q, k, v, mask, D**-0.5, n_split=splits, launch=launch)
            ref = reference_attention(q.float(), k.float(), v.float(), mask, D**-0.5)
            assert got.dtype == dtype and got.shape == q.shape
            err = ((got.float() - ref).norm() / ref.norm()).item()
            assert err < (1e-5 if dtype == torch.float32 else 2e-3), (B, H, G, T, S, dtype, splits, kind, err)
        print("ok")
        """
    )
    assert out.strip().endswith("ok")


def test_triton_decode_attention_gives_the_plain_decode_logits(run_interpreted, spy_decode_code):
    """A GQA decoder and an MHA decoder decoding with `grouped_decode="triton"` (every step's
    attention through the kernel, the prefill through SDPA) give the default decode's logits."""
    out = run_interpreted(
        spy_decode_code
        + """
from frugalformers import build_model
import frugalformers.kernels.decode_attention as da
torch.manual_seed(0)
for kv in (2, 4):
    model = build_model("llama-tiny-gqa4", d_model=64, d_ff=128, n_heads=4, n_kv_heads=kv, n_layers=2).eval()
    ids = torch.randint(5, 100, (3, 30))
    fast, prefill, calls = spy_decode(model, da, ids, grouped_decode="triton")
    assert prefill == 0 and calls == 3 * 2, (prefill, calls)  # every step of 2 layers
    plain, _, none = spy_decode(model, da, ids)
    assert none == 0
    for a, b in zip(fast, plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
print("ok")
"""
    )
    assert out.strip().endswith("ok")


def test_the_triton_path_falls_back_on_cpu_with_a_warning():
    model = build_model("llama-tiny-gqa4", d_model=64, d_ff=128, n_heads=4, n_kv_heads=2, n_layers=1).eval()
    with pytest.raises(ValueError, match="grouped_decode='flex' is not one of"):
        model.setup_cache(1, 8, grouped_decode="flex")
    ids = torch.randint(5, 100, (1, 8))
    with torch.no_grad():
        full = model(ids).logits
        with pytest.warns(UserWarning, match="falls back to the matmul path here"):
            model.setup_cache(1, 8, grouped_decode="triton")
        steps = [model(ids[:, t : t + 1], input_pos=torch.tensor([t])).logits for t in range(8)]
        model.clear_cache()
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-5)


def test_kernels_compile_for_hopper(compile_for_hopper):
    """The attention kernel's two products on the tensor cores and its K / V tiles in flight; the
    combine kernel builds too."""
    from frugalformers.kernels.decode_attention import _combine_kernel, _decode_attention_kernel

    ptrs = {n: "*bf16" for n in ("q_ptr", "k_ptr", "v_ptr", "out_ptr")}
    ptrs.update({"mask_ptr": "*fp32", "part_ptr": "*fp32", "stats_ptr": "*fp32", "scale": "fp32"})
    aligned = ("S", "s_per_split", "sqb", "sqh", "skb", "skg", "sks", "svb", "svg", "svs", "smb", "sob", "soh")
    for split in (False, True):
        consts = {"HAS_MASK": True, "SPLIT": split, "IEEE": False, "BLOCK_R": 16, "BLOCK_S": 64, "D": 128}
        kernel = compile_for_hopper(_decode_attention_kernel, ptrs, consts, aligned=aligned)
        assert "mma" in kernel.asm["ptx"]  # the two products on the tensor cores
        assert len(re.findall("async_copy_global_to_local", kernel.asm["ttgir"])) >= 2  # K / V tiles in flight
    types = {"part_ptr": "*fp32", "stats_ptr": "*fp32", "out_ptr": "*bf16"}
    assert "st.global" in compile_for_hopper(_combine_kernel, types, {"BLOCK_R": 16, "D": 128, "SPLITS": 4}).asm["ptx"]
