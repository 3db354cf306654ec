"""MoWE: the word-expert layer at 4K / 32K / 128K experts against a dense FFN of equal active FLOPs,
and whole-model training throughput of MoWE-Base vs T5-Base vs Switch-Base.

    python benchmarks/mowe.py                 # GPU: layer rows, then training steps
    python benchmarks/mowe.py --layers-only   # the layer rows alone (section mowe-layers)
    python benchmarks/mowe.py --profile       # kernel time by category of the layers
    python benchmarks/mowe.py --profile-models  # ... of the T5-Base and MoWE-Base training steps
    python benchmarks/mowe.py --sweep         # the input-gradient kernel's launch options
    python benchmarks/mowe.py --lazy-paths    # MoWE-Base's step, the bank's update by kernel / torch ops
    python benchmarks/mowe.py --smoke         # CPU, tiny

Layer rows (bf16 autocast, forward + backward, median of repeats): 32,768 tokens of d 768 whose
routing ids follow a Zipf law over our 187,672-word routing vocabulary (the 16 most frequent ids
are skipped, as in the paper); experts d 768 -> 64 -> 768. "dense, equal active FLOPs" is one FFN
768 -> 64 -> 768 over the same routed tokens; "T5 FFN" is the gated 2048-wide FFN a MoWE layer
replaces in T5.1.1-Base. Model rows: a training step (forward with labels, backward, fused AdamW) at
batch 16 x 512 input tokens, 128 target tokens.

Three layer variants per expert count (VARIANTS): the grouped GEMM over gathered weights with an
fp32 bank and a dense gradient (the path before 2026-12-01), the fused kernels
(`kernels/word_experts.py`) with the same bank, and the fused kernels with mowe-base's bf16 bank
and row-sparse gradient. "weights floor ms" is three passes over the touched experts' weights
(read forward, read for dx, gradient written) at the measured copy bandwidth.

What to expect (before running, 2026-12-01): a routed token reads its expert's 2 x 768 x 64
weights and spends 2 x 2 x 768 x 64 FLOPs on them, so the layer is bound by bytes. Our 32,768 Zipf
tokens route 24,059 tokens to 10,868 of the 32K experts (4,001 of 4K, 12,065 of 128K): 2.1 GB of
bf16 weights, a 1.5 ms floor at 4.25 TB/s for a forward + backward. The dense FFN of equal FLOPs
reads 196 KB and is bound by its activations and launches (~1 ms), so even a layer at its floor
would be ~0.7x it; expected for the fused bf16 layer ~2.5-3 ms, ~0.4x. Measured (RESULTS.md
`mowe`, `mowe-analysis`): 3.65-3.70 ms, 0.23-0.32x across runs, the forward kernel at 93% of the
bandwidth, ~1.1 ms of host-side launch time around the kernels. With the routing made on the GPU
without a host sync (second session, `route_words`): 2.70-2.90 ms, 0.39-0.46x; the row "dense ...,
CUDA graph" gives the dense layer's GPU time alone (0.53 ms), below the word-expert layer's 1.5 ms
floor.
"""

from __future__ import annotations

import argparse
import gc
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

from frugalformers import build_model
from frugalformers.bench import (
    format_table,
    hardware,
    measure,
    profile_step,
    profiles_markdown,
    update_results,
    write_json,
)
from frugalformers.bench.report import add_output_args, output_dir
from frugalformers.bench.steps import bf16_autocast, layer_fwd_bwd
from frugalformers.bench.timing import copy_bandwidth, cuda_graph_ms
from frugalformers.nn.ffn import FeedForward
from frugalformers.nn.word_experts import WordExpertBank, WordExperts, expert_of
from frugalformers.train.row_sparse_adamw import RowSparseAdamW

HERE = Path(__file__).resolve().parent
ROUTING_VOCAB = 187_672  # routing ids of the base tokenizer of our corpus (DATA.md)


def zipf_ids(shape, vocab: int, device, seed: int = 0) -> torch.Tensor:
    """Routing ids 1..vocab drawn with probability proportional to 1 / rank."""
    g = torch.Generator().manual_seed(seed)
    p = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
    ids = torch.multinomial(p / p.sum(), int(torch.tensor(shape).prod()), replacement=True, generator=g) + 1
    return ids.reshape(shape).to(device)


def layer_inputs(tokens: int, d: int, device):
    """Activations (B, 512, d), their Zipf routing ids and MixContext, and the routed-token count."""
    from frugalformers.models.recipe import MixContext

    seq = 512 if tokens >= 512 else tokens
    B = tokens // seq
    x = torch.randn(B, seq, d, device=device, requires_grad=True)
    words = zipf_ids((B, seq), ROUTING_VOCAB, device)
    return x, words, MixContext(extras={"word_ids": words}), int((words > 16).sum())


def t5_ffn(d: int, device):
    """The T5.1.1 gated FFN a MoWE layer sits beside (d_ff 2048 at d 768)."""
    return FeedForward(d, 2048 if d == 768 else 4 * d, "gelu_new", gated=True, bias=False).to(device)


# the layer variants timed at each expert count: (label, bank dtype, row-sparse gradient, dispatch)
VARIANTS = (
    ("grouped GEMM, fp32 bank, dense grad", "float32", False, "unfused"),
    ("fused kernels, fp32 bank, dense grad", "float32", False, "auto"),
    ("fused kernels, bf16 bank, row-sparse grad", "bfloat16", True, "auto"),
)
UNFUSED_MAX_EXPERTS = 32768  # the grouped-GEMM path with a dense fp32 gradient: 4K and 32K only (time, memory)


def word_expert_layer(E: int, d: int, d_e: int, device, dtype: str, sparse: bool, impl: str) -> WordExperts:
    torch.manual_seed(0)
    with torch.device(device):  # built on the device: a 128K-expert bank is 12.9G parameters
        bank = WordExpertBank(E, d, d_e, dtype=dtype, sparse_grad=sparse)
    return WordExperts(bank, skip_top=16, impl=impl)


def layer_profiles(experts_list, tokens, d, d_e, device, autocast):
    """Kernel time by category: the T5 FFN, then the word-expert layer (mowe-base's bf16 bank with
    row-sparse gradients) at each expert count."""
    x, _, ctx, _ = layer_inputs(tokens, d, device)
    out = [("T5.1.1 FFN (gated)", profile_step(layer_fwd_bwd(t5_ffn(d, device), autocast, x), device))]
    label, dtype, sparse, impl = VARIANTS[-1]
    for E in experts_list:
        layer = word_expert_layer(E, d, d_e, device, dtype, sparse, impl)
        out.append((f"MoWE, {E} experts, {label}", profile_step(layer_fwd_bwd(layer, autocast, x, ctx), device)))
        del layer
    return out


def layer_rows(experts_list, tokens, d, d_e, device, autocast, warmup, repeats, bandwidth):
    rows = []
    x, words, ctx, routed = layer_inputs(tokens, d, device)
    dense = FeedForward(d, d_e, "gelu_new", gated=False, bias=False).to(device)
    xr = torch.randn(1, routed, d, device=device, requires_grad=True)
    t_dense = measure(layer_fwd_bwd(dense, autocast, xr), warmup=warmup, repeats=repeats, device=device)
    t_t5 = measure(layer_fwd_bwd(t5_ffn(d, device), autocast, x), warmup=warmup, repeats=repeats, device=device)
    rows.append({"layer": f"dense {d}->{d_e}->{d}, equal active FLOPs", "experts": 1, "routed tokens": routed,
                 "fwd+bwd ms": t_dense.median_ms, "peak GiB": t_dense.peak_mem_gib})  # fmt: skip
    if device == "cuda":  # the same layer replayed from a CUDA graph: its GPU time, without the host's launches
        graphed = cuda_graph_ms(layer_fwd_bwd(dense, autocast, xr), repeats=max(repeats, 10))
        rows.append({"layer": f"dense {d}->{d_e}->{d}, equal active FLOPs, CUDA graph", "experts": 1,
                     "routed tokens": routed, "fwd+bwd ms": graphed})  # fmt: skip
    rows.append({"layer": "T5.1.1 FFN (gated, the FFN MoWE replaces)", "experts": 1, "routed tokens": tokens,
                 "fwd+bwd ms": t_t5.median_ms, "peak GiB": t_t5.peak_mem_gib})  # fmt: skip
    for E in experts_list:
        touched = int(expert_of(words[words > 16], E).unique().numel())
        for label, dtype, sparse, impl in VARIANTS:
            if impl == "unfused" and E > UNFUSED_MAX_EXPERTS:
                continue
            layer = word_expert_layer(E, d, d_e, device, dtype, sparse, impl)
            row = {"layer": f"MoWE: {label}", "experts": E, "routed tokens": routed, "experts touched": touched}
            try:
                t = measure(layer_fwd_bwd(layer, autocast, x, ctx), warmup=warmup, repeats=repeats, device=device)
            except torch.OutOfMemoryError:
                rows.append({**row, "fwd+bwd ms": "OOM"})
                del layer
                torch.cuda.empty_cache()
                continue
            # the floor: the touched experts' weights read forward, read again for dx, their gradient written
            touched_bytes = touched * 2 * d * d_e * layer.bank.w_in.element_size()
            floor = 3 * touched_bytes / bandwidth * 1e3 if bandwidth else None
            row.update({"fwd+bwd ms": t.median_ms, "vs dense equal FLOPs": t_dense.median_ms / t.median_ms,
                        "vs T5 FFN": t_t5.median_ms / t.median_ms, "touched expert MB": touched_bytes / 1e6,
                        "weights floor ms": floor, "peak GiB": t.peak_mem_gib})  # fmt: skip
            rows.append(row)
            print(row, flush=True)
            del layer
            if device == "cuda":
                torch.cuda.empty_cache()
    return rows


def sweep_rows(tokens, d, d_e, device, autocast, repeats, E: int = 32768):
    """The 32K-expert layer (mowe-base's bank) under launch options of the input-gradient kernel,
    the rest as it is: which num_warps / num_stages / BLOCK_D move the weights and their gradient
    fastest. (Streaming stores for the gradient, cache_modifier ".cs", were tried on 2026-12-01:
    2.59-2.77 ms against 2.53-2.70 without, so they are not kept.)"""
    from frugalformers.kernels import word_experts as wk

    x, _, ctx, _ = layer_inputs(tokens, d, device)
    label, dtype, sparse, impl = VARIANTS[-1]
    layer = word_expert_layer(E, d, d_e, device, dtype, sparse, impl)
    default, rows = dict(wk.LAUNCH["input_grad"]), []
    grid = [(bd, w, st) for bd in (64, 128) for w in (4, 8) for st in (2, 3, 4)]
    options = [{"num_warps": w, "num_stages": st, "BLOCK_D": bd} for bd, w, st in grid]
    for opt in options if device == "cuda" else options[:1]:
        wk.LAUNCH["input_grad"] = opt
        t = measure(layer_fwd_bwd(layer, autocast, x, ctx), warmup=2, repeats=max(repeats, 10), device=device)
        rows.append({**opt, "fwd+bwd ms": t.median_ms})
        print(rows[-1], flush=True)
    wk.LAUNCH["input_grad"] = default
    return rows


def release(device) -> None:
    """Free the last model before the next is built: a built model with its optimizer stays alive in
    reference cycles until the cycle collector runs (without it, MoWE-Base's peak grew 54 -> 84 GiB
    and its step 126 -> 148 ms over four models built in a row, 2026-12-01)."""
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def model_step(preset: str, batch: int, seq: int, target: int, device, autocast):
    """One training step of `preset` (forward with labels, backward, AdamW; MoWE-Base's row-sparse
    bank lazily, as `frugal train` does with train.row_sparse_adamw) on random ids, built on the
    device (MoWE-Base's bank: 3.2G parameters)."""
    torch.manual_seed(0)
    with torch.device(device):
        model = build_model(preset, max_seq_len=max(seq, 512)).train()
    V = model.config.vocab_size
    ids = torch.randint(5, V, (batch, seq), device=device)
    labels = torch.randint(5, V, (batch, target), device=device)
    kw = {"input_ids": ids, "decoder_input_ids": labels, "labels": labels}
    if "mowe" in preset:
        kw["word_ids"] = zipf_ids((batch, seq), ROUTING_VOCAB, device)
        kw["decoder_word_ids"] = zipf_ids((batch, target), ROUTING_VOCAB, device, seed=1)
    opt = RowSparseAdamW(model.parameters(), lr=1e-5, fused=device == "cuda")

    def step():
        with autocast():
            out = model(**kw)
        loss = out.loss.float() + sum(v.float() for v in out.aux_losses.values())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def model_rows(presets, batch, seq, target, device, autocast, warmup, repeats):
    rows, base = [], None
    for label, preset in presets:
        try:
            step = model_step(preset, batch, seq, target, device, autocast)
            t = measure(step, warmup=warmup, repeats=repeats, device=device)
        except torch.OutOfMemoryError:
            rows.append({"model": label, "ms": "OOM"})
            continue
        finally:
            step = None
            release(device)
        tps = batch * seq / (t.median_ms / 1e3)
        base = base or tps
        rows.append({"model": label, "batch": f"{batch} x {seq} -> {target}", "ms": t.median_ms, "input tokens/s": tps,
                     "vs T5-Base": tps / base, "peak GiB": t.peak_mem_gib})  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def model_profiles(presets, batch, seq, target, device, autocast):
    """Kernel time by category of each model's training step."""
    out = []
    for label, preset in presets:
        step = model_step(preset, batch, seq, target, device, autocast)
        out.append((f"{label}, training step, batch {batch} x {seq} -> {target}", profile_step(step, device)))
        step = None
        release(device)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experts", type=int, nargs="+", default=[4096, 32768, 131072])
    p.add_argument("--tokens", type=int, default=32768)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--profile", action="store_true", help="kernel time by category of the layers")
    p.add_argument("--profile-models", action="store_true", help="kernel time by category of the training steps")
    p.add_argument("--lazy-paths", action="store_true", help="MoWE-Base's step with the lazy AdamW kernel vs torch ops")
    p.add_argument("--layers-only", action="store_true", help="the layer rows, not the training steps")
    p.add_argument("--sweep", action="store_true", help="time the layer under input-gradient kernel launch options")
    add_output_args(p, HERE, "mowe")
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    autocast = bf16_autocast(device)
    d, d_e, seq, target = 768, 64, 512, 128
    presets = [
        ("T5-Base", "t5-base"),
        ("Switch-Base (336 experts)", "switch-base"),
        ("MoWE-Base (32K experts)", "mowe-base"),
    ]
    if args.smoke:
        args.experts, args.tokens, args.batch, args.repeats, args.warmup = [64, 256], 256, 2, 1, 0
        d, d_e, seq, target = 32, 8, 64, 16
        presets = [
            ("T5-Base", "t5-tiny"),
            ("Switch-Base (336 experts)", "switch-tiny"),
            ("MoWE-Base (32K experts)", "mowe-tiny"),
        ]
    if args.profile:
        md = profiles_markdown(
            "MoWE: where the word-expert layer's time goes",
            "python benchmarks/mowe.py --profile",
            layer_profiles(args.experts, args.tokens, d, d_e, device, autocast),
            f"bf16 autocast, {args.tokens} tokens with Zipf routing ids, experts {d}->{d_e}->{d}, forward + backward.",
        )
        print(md)
        if not args.smoke:
            update_results(args.results, "mowe-profile", md)
        return 0
    if args.lazy_paths:  # the same step, the bank's lazy update by the Triton kernel or by torch ops, alternated
        from unittest import mock

        import frugalformers.train.row_sparse_adamw as rsa

        rows = []
        for path in ("kernel", "torch ops", "kernel", "torch ops"):
            # a plain function: a MagicMock would record (and keep alive) every parameter and gradient it is called with
            torch_ops = mock.patch.object(rsa, "lazy_kernel_applies", lambda p, grad: False)
            with torch_ops if path == "torch ops" else nullcontext():
                timed = model_rows(presets[2:], args.batch, seq, target, device, autocast, args.warmup, args.repeats)
            rows += [{**r, "lazy update": path} for r in timed]
        print(format_table(rows, ["model", "lazy update", "ms", "input tokens/s", "peak GiB"]))
        return 0
    if args.profile_models:
        md = profiles_markdown(
            "MoWE-Base vs T5-Base: where a training step's time goes",
            "python benchmarks/mowe.py --profile-models",
            model_profiles(presets[::2], args.batch, seq, target, device, autocast),
            f"bf16 autocast, batch {args.batch} x {seq} input tokens, {target} target tokens, fused AdamW (MoWE-Base's "
            "bank: lazy AdamW over the touched rows).",
        )
        print(md)
        if not args.smoke:
            update_results(args.results, "mowe-model-profile", md)
        return 0
    if args.sweep:
        table = format_table(sweep_rows(args.tokens, d, d_e, device, autocast, args.repeats))
        print(table)
        if not args.smoke:
            md = (f"## MoWE: the input-gradient kernel's launch options\n\nHardware: {hardware()}  \n"
                  f"Command: `python benchmarks/mowe.py --sweep`  \n"
                  f"The 32K-expert layer (bf16 bank, row-sparse gradient), {args.tokens} Zipf tokens, forward + "
                  f"backward (median of 10) with each launch option of `_input_grad_kernel`, the rest as it is.\n\n"
                  f"{table}\n")  # fmt: skip
            update_results(args.results, "mowe-sweep", md)
        return 0
    bandwidth = copy_bandwidth(device) if device == "cuda" else None
    layers = layer_rows(args.experts, args.tokens, d, d_e, device, autocast, args.warmup, args.repeats, bandwidth)
    models = [] if args.layers_only else model_rows(presets, args.batch, seq, target, device, autocast, args.warmup,
                                                    args.repeats)  # fmt: skip
    columns = ["layer", "experts", "routed tokens", "experts touched", "fwd+bwd ms", "vs dense equal FLOPs",
               "vs T5 FFN", "touched expert MB", "weights floor ms", "peak GiB"]  # fmt: skip
    t1, t2 = format_table(layers, columns), format_table(models)
    print(t1)
    print(t2)
    hw = hardware()
    out = output_dir(args.out, args.smoke, HERE)
    write_json(out / "mowe.json", {"layer": layers, "model": models}, hardware=hw, copy_bandwidth=bandwidth)
    if args.smoke:
        return 0
    md = (
        f"## MoWE: word-expert layer and MoWE-Base training\n\nHardware: {hw}  \n"
        f"Command: `python benchmarks/mowe.py --experts {' '.join(map(str, args.experts))} "
        f"--repeats {args.repeats}`  \n"
        f"bf16 autocast, median of {args.repeats}. Layer: {args.tokens} tokens, Zipf routing ids over a "
        f"{ROUTING_VOCAB:,}-word routing vocabulary, top 16 skipped, experts {d}->{d_e}->{d}; "
        f"forward + backward. Weights floor = 3 passes over the touched experts' weights (read forward, read "
        f"for dx, gradient written) over the measured copy bandwidth"
        f"{f' ({bandwidth / 1e12:.2f} TB/s)' if bandwidth else ''}.\n\n"
        f"{t1}\n\nTraining step, batch {args.batch} x {seq} input tokens, {target} target tokens, "
        f"fused AdamW (MoWE-Base's row-sparse bf16 bank: lazy AdamW over the touched rows):\n\n{t2}\n"
    )
    update_results(args.results, "mowe-layers" if args.layers_only else "mowe", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
