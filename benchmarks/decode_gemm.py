"""The decode step's GEMMs alone: cuBLAS (`F.linear`) vs the Triton decode GEMM (`nn/skinny_gemm.py`)
on the 1B Llama-shaped decoder's projections, at a decode batch of M rows (default 32).

A decode GEMM reads its weight once and does almost no arithmetic per byte (M = 32 rows: 32 FLOP
per weight byte, far under the H200's ~200 FLOP/byte ridge), so its floor is N K 2 bytes over the
copy bandwidth. Each shape runs as a chain of 16 distinct weights (one per layer, as in the model,
so the weights do not sit in the 60 MB L2 between calls) captured in one CUDA graph; the time per
GEMM is the replay time / 16, median of the repeats. "step" is every GEMM of one decode step
(per layer q/k/v fused, o, gate/up fused, down; then the LM head) in one graph: the GEMM part of
the step that `gqa_decode.py` times whole.

What to expect, before measuring: cuBLAS streamed these weights at ~40% of the copy bandwidth in
the compiled-step profile (RESULTS.md, `gqa-decode-analysis`); the Triton kernel (narrow column
blocks, K never split) should reach 70-85% on the large shapes (gate/up 46 MB, LM head 131 MB) and
less on the 8 MB o projection, whose floor (~2 us) is close to a kernel's ramp-up.

    python benchmarks/decode_gemm.py                 # GPU
    python benchmarks/decode_gemm.py --smoke         # CPU, tiny, eager (a dry run)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from frugalformers.bench import format_table, hardware, update_results, write_json
from frugalformers.bench.report import add_output_args, output_dir
from frugalformers.bench.timing import bench_device, copy_bandwidth, cuda_graph_ms
from frugalformers.nn import skinny_gemm

HERE = Path(__file__).resolve().parent
LAYERS = 16


def projection_shapes(d: int, d_ff: int, heads: int, kv: int, head_dim: int, vocab: int) -> dict[str, tuple]:
    """name -> (N, K) of the weights one decode step multiplies, per layer, and the LM head."""
    return {
        "qkv": ((heads + 2 * kv) * head_dim, d),
        "o": (d, heads * head_dim),
        "gate_up": (2 * d_ff, d),
        "down": (d, d_ff),
        "lm_head": (vocab, d),
    }


def chain_ms(calls, device: str, repeats: int) -> float:
    """Median ms of running `calls` (a list of thunks) once: a CUDA-graph replay on GPU."""

    def run():
        for c in calls:
            c()

    with torch.no_grad():
        if device != "cuda":
            run()
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                run()
                times.append((time.perf_counter() - t0) * 1e3)
            return statistics.median(times)
        return cuda_graph_ms(run, repeats, warmup=2)  # (the Triton autotuner runs in the warm-up)


GEMMS = {
    "cublas": lambda x, w: F.linear(x, w),
    "triton": lambda x, w: skinny_gemm.skinny_linear(x, w),
}


def best_config(N: int, K: int, M: int) -> str:
    """The autotuner's pick for this shape, if it ran."""
    tuned = getattr(skinny_gemm, "_skinny_kernel_tuned", None)
    for key, cfg in getattr(tuned, "cache", {}).items():
        if key[:3] == (M, N, K):
            kw = cfg.kwargs
            return f"N{kw['BLOCK_N']} K{kw['BLOCK_K']} w{cfg.num_warps} s{cfg.num_stages}"
    return "-"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=32, help="decode batch M")
    p.add_argument("--kv", type=int, nargs="+", default=[16, 4, 1], help="kv heads of the qkv shapes")
    p.add_argument("--repeats", type=int, default=30)
    add_output_args(p, HERE)
    args = p.parse_args(argv)
    device, dtype = bench_device(args.smoke)
    dims = dict(d=2048, d_ff=5632, heads=16, head_dim=128, vocab=32000)
    layers = LAYERS
    if args.smoke:
        dims, layers, args.repeats, args.kv = dict(d=64, d_ff=176, heads=8, head_dim=8, vocab=512), 2, 2, [8, 1]
    bw = copy_bandwidth(device) if device == "cuda" else None
    torch.manual_seed(0)
    x = torch.randn(args.rows, dims["d"], device=device, dtype=dtype)
    xff = torch.randn(args.rows, dims["d_ff"], device=device, dtype=dtype)
    rows = []
    step_weights: dict[int, list] = {}
    for kv in args.kv:
        shapes = projection_shapes(kv=kv, **dims)
        step_weights[kv] = []
        for name, (N, K) in shapes.items():
            if name != "qkv" and kv != args.kv[0]:
                continue  # only q/k/v depends on the kv heads
            count = 1 if name == "lm_head" else layers
            ws = [torch.randn(N, K, device=device, dtype=dtype) / K**0.5 for _ in range(count)]
            inp = xff if K == dims["d_ff"] else x
            row = {"GEMM": name if name != "qkv" else f"qkv ({kv} kv)", "N x K": f"{N} x {K}", "rows": args.rows,
                   "weight MB": N * K * x.element_size() / 1e6}  # fmt: skip
            floor = N * K * x.element_size() / bw * 1e3 if bw else None
            row["floor us"] = floor * 1e3 if floor else None
            for mode, gemm in GEMMS.items():
                ms = chain_ms([lambda w=w, g=gemm, i=inp: g(i, w) for w in ws], device, args.repeats) / count
                row[f"{mode} us"] = ms * 1e3
                row[f"{mode} % bw"] = 100 * floor / ms if floor else None
            row["triton config"] = best_config(N, K, args.rows)
            row["triton gain"] = row["cublas us"] / row["triton us"]
            rows.append(row)
            print(format_table([row], COLUMNS).splitlines()[-1], flush=True)
            step_weights[kv].append((name, ws, inp))
    for kv, entries in step_weights.items():  # a whole step's GEMMs: q/k/v of this kv count, the rest shared
        entries = entries + [e for e in step_weights[args.kv[0]] if e[0] != "qkv" and kv != args.kv[0]]
        by_name = {name: (ws, inp) for name, ws, inp in entries}
        order = [(by_name[n][0][i], by_name[n][1]) for i in range(layers) for n in ("qkv", "o", "gate_up", "down")]
        order.append((by_name["lm_head"][0][0], x))
        nbytes = sum(w.numel() * w.element_size() for w, _ in order)
        row = {"GEMM": f"step ({kv} kv)", "N x K": f"{len(order)} GEMMs", "rows": args.rows, "weight MB": nbytes / 1e6}
        floor = nbytes / bw * 1e3 if bw else None
        row["floor us"] = floor * 1e3 if floor else None
        for mode, gemm in GEMMS.items():
            ms = chain_ms([lambda w=w, i=i, g=gemm: g(i, w) for w, i in order], device, args.repeats)
            row[f"{mode} us"] = ms * 1e3
            row[f"{mode} % bw"] = 100 * floor / ms if floor else None
        row["triton gain"] = row["cublas us"] / row["triton us"]
        rows.append(row)
        print(format_table([row], COLUMNS).splitlines()[-1], flush=True)
    table = format_table(rows, COLUMNS)
    print(table)
    hw = hardware()
    print(hw, f"copy bandwidth {bw / 1e12:.2f} TB/s" if bw else "")
    out = output_dir(args.out, args.smoke, HERE)
    write_json(out / "decode_gemm.json", rows, hardware=hw, copy_bandwidth=bw)
    if args.smoke:
        return 0
    md = (
        f"## Decode GEMMs alone: cuBLAS vs the Triton decode GEMM, 1B decoder shapes\n\n"
        f"Hardware: {hw}; measured copy bandwidth {bw / 1e12:.2f} TB/s  \n"
        f"Command: `python benchmarks/decode_gemm.py --rows {args.rows}`  \n"
        f"bf16, {args.rows} rows; each shape a chain of {layers} distinct weights in one CUDA graph (time per "
        f"GEMM = replay / {layers}), median of {args.repeats}; `step` = every GEMM of one decode step in one graph. "
        f"% bw = floor (weight bytes / copy bandwidth) / time.\n\n{table}\n"
    )
    update_results(args.results, "decode-gemm", md)
    return 0


COLUMNS = ["GEMM", "N x K", "rows", "weight MB", "floor us", "cublas us", "cublas % bw", "triton us", "triton % bw",
           "triton gain", "triton config"]  # fmt: skip

if __name__ == "__main__":
    sys.exit(main())
