"""The fused decode layer (`nn.decode_layer_kernel`, `setup_cache(decode_layer="fused")`) against the
modules' decode step, run by Triton's interpreter on CPU (a launch per phase: the interpreter runs
programs one after another, so the persistent kernel's grid barriers are compiled for sm_90 here and
run on the GPU by `benchmarks/cuda_checks.py --only fused_layer`)."""

import re

import pytest
import torch

from frugalformers import build_model
from frugalformers.nn.decode_layer_kernel import INPUT_SHARE, MAX_BLOCK_N, split_plan

# a Llama-shaped decoder the kernel tiles: head_dim 16 (llama-tiny's 8 is below tl.dot's 16)
SMALL = dict(vocab_size=100, d_model=64, n_layers=2, n_heads=4, d_ff=96, max_seq_len=256)

DECODE_BOTH_WAYS = """
import torch
from frugalformers import build_model

def decode(m, ids, mask, S, steps, **options):
    '''A left-padded prefill through the modules, then `steps` one-token steps; logits and caches.'''
    B, P = ids.shape
    m.setup_cache(B, S, **options)
    positions = (mask[:, :P].long().cumsum(1) - 1).clamp(min=0)
    out = []
    with torch.no_grad():
        out.append(m(ids, attention_mask=mask, positions=positions, input_pos=torch.arange(P)).logits[:, -1])
        last, mk = positions[:, -1], mask.clone()
        for t in range(steps):
            mk[:, P + t] = True
            last = last + 1
            nxt = out[-1].argmax(-1, keepdim=True)
            step = m(nxt, attention_mask=mk, positions=last[:, None], input_pos=torch.tensor([P + t]))
            out.append(step.logits[:, -1])
    caches = [torch.cat([layer.mixer.kv_cache.k, layer.mixer.kv_cache.v]) for layer in m.layers]
    m.clear_cache()
    return torch.stack(out), torch.stack(caches)
"""


def test_fused_step_equals_the_modules_step(run_interpreted):
    """GQA, MQA and MHA; left-padded rows with their own rotary positions; K split over programs in
    every GEMM phase (the partials' fixed-order sum, the norm statistics of several column ranges),
    the cache split for attention (the combine phase), several items per program; float32 at float32
    tolerance, float16 at its own."""
    out = run_interpreted(
        DECODE_BOTH_WAYS
        + f"""
SMALL = {SMALL!r}
cases = [  # kv heads, dtype, cache length, programs, splits
    (2, torch.float32, 40, 4, None),
    (2, torch.float32, 160, 4, {{"qkv": 2, "o": 4, "gu": 2, "down": 4, "attention": 2}}),
    (1, torch.float32, 200, 6, {{"qkv": 3, "o": 2, "gu": 1, "down": 6, "attention": 3}}),
    (4, torch.float32, 40, 4, {{"o": 2}}),
    (2, torch.float16, 40, 4, {{"qkv": 2, "down": 2}}),
    (2, torch.float32, 160, 4, {{"attention": 2}}),  # 12 items on 4 programs
]
for kv, dtype, S, programs, splits in cases:
    torch.manual_seed(0)
    m = build_model("llama-tiny", **SMALL, n_kv_heads=kv).to(dtype).eval()
    B, P = 3, 6
    ids = torch.randint(1, 100, (B, P))
    mask = torch.zeros(B, S, dtype=torch.bool)
    mask[:, :P] = True
    mask[0, :2] = False  # row 0 is left-padded by two
    ref, ref_cache = decode(m, ids, mask, S, 3)
    opts = dict(programs=programs, block_k=32, splits=splits)
    got, got_cache = decode(m, ids, mask, S, 3, decode_layer="fused", fused_options=opts)
    tol = 1e-5 if dtype == torch.float32 else 5e-3
    err = ((got.float() - ref.float()).norm() / ref.float().norm()).item()
    cerr = ((got_cache.float() - ref_cache.float()).norm() / ref_cache.float().norm()).item()
    assert err < tol and cerr < tol, (kv, dtype, S, splits, err, cerr)
    assert (got[0] == ref[0]).all()  # the prefill runs the modules either way
print("ok")
"""
    )
    assert out.strip().endswith("ok")


def test_generate_with_fused_layers_gives_the_modules_tokens(run_interpreted):
    """`generate(decode_options={"decode_layer": "fused"})`: the same greedy tokens as the modules,
    for prompts of different lengths."""
    out = run_interpreted(
        f"""
import torch
from frugalformers import build_model
from frugalformers.generate import generate
torch.manual_seed(0)
m = build_model("llama-tiny", **{SMALL!r}, n_kv_heads=2).eval()
prompts = [[5, 6, 7, 8, 9], [10, 11], [12]]
ref = generate(m, prompts, 6)
got = generate(m, prompts, 6, decode_options=dict(decode_layer="fused", fused_options=dict(programs=4, block_k=32)))
assert got == ref, (got, ref)
assert m._fused is None  # generate clears the cache, and with it the scratch
print("ok")
"""
    )
    assert out.strip().endswith("ok")


@pytest.mark.parametrize(
    "n, n_acc, k, expect",
    [
        (3072, 1, 2048, (3, 128)),  # GQA-4 q/k/v
        (2048, 1, 2048, (4, 64)),  # o
        (5632, 2, 2048, (1, 64)),  # gate / up: 2 weights, wide enough alone
        (2048, 1, 5632, (4, 64)),  # down
        (6144, 1, 2048, (2, 128)),  # MHA q/k/v
    ],
)
def test_split_plan_at_the_1b_shapes(n, n_acc, k, expect):
    """On 132 SMs at batch 32: the smallest K split with which a program's input chunk is at most
    0.6 of its weight slice (INPUT_SHARE), every column range within the block, the ranges covering N."""
    ks, block_n = split_plan(n, n_acc, 32, 132, k)
    assert (ks, block_n) == expect
    assert 132 % ks == 0 and block_n <= MAX_BLOCK_N and block_n * (132 // ks) >= n
    assert 32 * 132 <= INPUT_SHARE * n * n_acc * ks  # input bytes per program vs its weight bytes


def test_split_plan_at_batch_one_keeps_k_whole():
    """One row: the input is small beside any weight slice, so no K is split."""
    assert split_plan(2048, 1, 1, 132, 2048)[0] == 1
    assert split_plan(5632, 2, 1, 132, 2048) == (1, 64)


def test_fused_layer_is_refused_with_the_reason():
    """A model the kernel does not cover says why at setup_cache, not by decoding another way."""
    tiny = build_model("llama-tiny")  # head_dim 8
    with pytest.raises(ValueError, match="head_dim=8"):
        tiny.setup_cache(2, 16, decode_layer="fused")
    assert all(layer.mixer.kv_cache is None for layer in tiny.layers)  # left as it was
    with pytest.raises(ValueError, match="decode_layer='layers' is not one of"):
        tiny.setup_cache(2, 16, decode_layer="layers")
    m = build_model("llama-tiny", **SMALL, n_kv_heads=2)  # on CPU without the interpreter
    with pytest.raises(ValueError, match="Triton does not run on cpu"):
        m.setup_cache(2, 16, decode_layer="fused")


def hopper_types(kernel) -> dict:
    """The kernel's argument types at the bf16 decode shapes (the rest i32, `compile_for_hopper`)."""
    types = {n: "*bf16" for n in kernel.arg_names if n.endswith("_ptr")}
    types.update(
        cos_ptr="*fp32", sin_ptr="*fp32", pos_ptr="*i64", slot_ptr="*i64", bias_ptr="*fp32", part_ptr="*fp32",
        apart_ptr="*fp32", sem_ptr="*i32", sync_ptr="*i32", err_ptr="*i32", eps="fp32", scale="fp32",
        ssq_ptr="*fp32", ssq_out_ptr="*fp32", ssq_mid_ptr="*fp32", times_ptr="*i64",
    )  # fmt: skip
    return types


def test_persistent_kernel_compiles_for_hopper_with_its_barriers(compile_for_hopper):
    """The one-launch kernel at the 1B GQA-4 shapes (batch 32): the grid barriers release and
    acquire at GPU scope, the split-K counters are atomic, the L2 prefetches are there, and its
    shared memory fits an SM."""
    from frugalformers.nn import decode_layer_kernel as K

    types = hopper_types(K._decode_layer_kernel)
    consts = dict(
        H=16, D=128, DM=2048, PHASE=-1, KS_QKV=3, BN_QKV=128, KS_O=4, BN_O=64, KS_GU=1, BN_GU=64, KS_DOWN=4,
        BN_DOWN=64, SPLIT=True, IEEE=False, BLOCK_M=32, BLOCK_R=16, BLOCK_K=128, BLOCK_S=64, SPINS=K.BARRIER_SPINS,
        PF=True,
    )  # fmt: skip
    kernel = compile_for_hopper(
        K._decode_layer_kernel, types, consts, **K.LAUNCH, aligned=("S", "F", "part_stride", "stride_mask")
    )
    ptx = kernel.asm["ptx"]
    assert len(re.findall(r"red\.global\.gpu\.release\.add", ptx)) == 5  # 5 barriers with the combine phase
    assert "ld.global.gpu.acquire" in ptx  # the spin
    assert len(re.findall(r"atom\.global\.gpu\.acq_rel\.add", ptx)) == 4  # 3 split-K phases + the exit count
    assert "prefetch.global.L2" in ptx  # each phase asks L2 for the next one's first bytes
    assert kernel.metadata.shared <= 227 * 1024


def test_fused_layer_buffers_refuse_a_batch_over_the_tile():
    """More rows than the GEMM tiles hold is a clear error at setup, naming the limit."""
    from frugalformers.nn.decode_layer_kernel import MAX_ROWS, FusedLayerBuffers, LayerShape

    shape = LayerShape(MAX_ROWS + 1, 64, 4, 2, 16, 96, 32)
    with pytest.raises(ValueError, match=f"batch={MAX_ROWS + 1} exceeds the fused decode layer's {MAX_ROWS} rows"):
        FusedLayerBuffers.make(shape, torch.float32, torch.device("cpu"))


def test_attention_bias_is_the_modules_decode_mask():
    """The step's additive mask row equals `build_attention_mask` for one query at the slot: padding
    and causality by slot, finfo.min where masked (a row with every key masked included)."""
    from frugalformers.nn.attention import build_attention_mask
    from frugalformers.nn.decode_layer_kernel import attention_bias

    torch.manual_seed(0)
    B, S = 4, 40
    keep = torch.rand(B, S) > 0.3
    keep[3] = False
    slot = torch.tensor([29])
    ref = build_attention_mask(keep, None, True, 1, S, torch.float32, "cpu", slot)  # (B, 1, 1, S)
    assert torch.equal(attention_bias(keep, slot, B, S), ref[:, 0, 0])
    causal_only = build_attention_mask(None, None, True, 1, S, torch.float32, "cpu", slot)
    assert torch.equal(attention_bias(None, slot, B, S), causal_only[:, 0, 0].expand(B, S))


def test_norm_input_and_its_row_sums_give_rmsnorm():
    """The first layer's norm input: x * w and the row sums of x^2 give RMSNorm(x) once the rows
    are scaled by rsqrt(mean + eps), as the fused GEMM does after its product."""
    from frugalformers.nn.decode_layer_kernel import norm_input
    from frugalformers.nn.norms import RMSNorm

    torch.manual_seed(0)
    norm = RMSNorm(64, eps=1e-5)
    norm.weight.data.normal_()
    x = torch.randn(3, 64)
    xw, ssq = norm_input(x, norm.weight, 16)
    assert ssq.shape == (1, 16) and (ssq[0, 3:] == 0).all()  # padded to the tile's rows
    scaled = xw * torch.rsqrt(ssq[0, :3, None] / 64 + 1e-5)
    torch.testing.assert_close(scaled, norm(x).detach(), rtol=1e-6, atol=1e-6)


def test_attention_loop_is_pipelined(compile_for_hopper):
    """The attention phase's tile loop streams the cache: Triton must pipeline it (loads in flight
    across iterations), which it does only while the tiles' addresses follow from the loop index."""
    from frugalformers.nn import decode_layer_kernel as K

    types = hopper_types(K._decode_layer_kernel)
    consts = dict(
        H=16, D=128, DM=2048, PHASE=1, KS_QKV=2, BN_QKV=128, KS_O=4, BN_O=64, KS_GU=1, BN_GU=64, KS_DOWN=4,
        BN_DOWN=64, SPLIT=False, IEEE=False, BLOCK_M=32, BLOCK_R=16, BLOCK_K=128, BLOCK_S=64, SPINS=K.BARRIER_SPINS,
    )  # fmt: skip
    kernel = compile_for_hopper(K._decode_layer_kernel, types, consts, **K.LAUNCH, aligned=("S", "stride_bias"))
    waits = [int(n) for n in re.findall(r"ttg\.async_wait[^\n]*\{num = (\d+)", kernel.asm["ttgir"])]
    assert max(waits) > 0, waits  # some copies stay in flight while a tile is computed
