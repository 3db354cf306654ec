"""Decode attention alone: the Triton flash-decoding kernel (`kernels/decode_attention.py`) under cache
splits and launch options, against the matmul path (`grouped_decode_attention(impl="matmul")`, the
compiled step's default) and, for MHA, SDPA, on the 1B Llama-shaped decoder's attention (16 query
heads of 128, batch 32, bf16) for kv heads 16 (MHA) / 8 / 4 / 2 / 1 (MQA).

A decode step's attention reads each layer's cache once: 2 B G S D x 2 bytes, its floor over the
copy bandwidth (GQA paper, Sec. 2). Each configuration runs 16 layers' distinct caches (as in the
model, so a small cache does not sit in the 60 MB L2 between calls) captured in one CUDA graph;
the time per layer is the replay time / 16, median of the repeats.

What to expect, before measuring (2026-12-01): the compiled step's profile put the kernel at 94%
of the bandwidth for MHA (512 programs, no split) but 63% for GQA-4 (128 (row, kv head) pairs
split in 3, 384 programs: 1.45 waves of two programs per SM, plus a combine kernel). A split
count whose programs fill whole waves, and more bytes in flight per program, should lift GQA-4
toward ~85%; MQA (32 pairs) must split 8 ways or more to fill the GPU.

    python benchmarks/decode_attention.py            # GPU
    python benchmarks/decode_attention.py --smoke    # CPU dry run (the matmul path only)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from frugalformers.bench import format_table, hardware, update_results, write_json
from frugalformers.bench.report import add_output_args, output_dir
from frugalformers.bench.timing import bench_device, copy_bandwidth, cuda_graph_ms
from frugalformers.kernels import decode_attention as da
from frugalformers.nn.attention import grouped_decode_attention

HERE = Path(__file__).resolve().parent
LAYERS = 16
HEADS, HEAD_DIM = 16, 128
KV_HEADS = {"MHA": 16, "GQA-8": 8, "GQA-4": 4, "GQA-2": 2, "MQA": 1}
# (BLOCK_S, num_warps, num_stages) tried with every split count
LAUNCHES = ((64, 4, 3), (64, 4, 4), (64, 8, 3), (128, 4, 2), (128, 8, 3), (32, 4, 4))
SPLITS = (1, 2, 3, 4, 6, 8, 12, 16)


def layer_inputs(B: int, G: int, S: int, device, dtype):
    """q (B, H, 1, D) and LAYERS distinct caches k / v (B, G, S, D); the additive mask (B, 1, 1, S)
    hides the last eighth of each row's positions (a batch of prompts of different lengths)."""
    q = torch.randn(B, HEADS, 1, HEAD_DIM, device=device, dtype=dtype)
    caches = [tuple(torch.randn(B, G, S, HEAD_DIM, device=device, dtype=dtype) for _ in "kv") for _ in range(LAYERS)]
    mask = torch.zeros(B, 1, 1, S, device=device)
    mask[..., S - S // 8 :] = torch.finfo(torch.float32).min
    return q, caches, mask


def per_layer_us(fn, caches, device: str, repeats: int) -> float:
    """Median us of fn(k, v) per layer, over a chain of the LAYERS caches (one CUDA graph on GPU)."""

    def run():
        for k, v in caches:
            fn(k, v)

    with torch.no_grad():
        if device != "cuda":
            run()
            return float("nan")
        return cuda_graph_ms(run, repeats=repeats) * 1e3 / LAYERS


def variant_rows(name: str, B: int, S: int, device: str, dtype, repeats: int, bandwidth: float | None, smoke: bool):
    G = KV_HEADS[name]
    q, caches, mask = layer_inputs(B, G, S, device, dtype)
    scale = HEAD_DIM**-0.5
    cache_bytes = 2 * B * G * S * HEAD_DIM * q.element_size()
    floor = cache_bytes / bandwidth * 1e6 if bandwidth else None
    base = {"model": name, "kv heads": G, "batch": B, "ctx": S, "cache MB": cache_bytes / 1e6, "floor us": floor}
    rows = []

    def row(path: str, us: float, **extra):
        rows.append({**base, "path": path, **extra, "us/layer": us,
                     "% of bandwidth": 100 * floor / us if floor and us == us else None})  # fmt: skip

    row("matmul (default)", per_layer_us(lambda k, v: grouped_decode_attention(q, k, v, mask, scale, "matmul"),
                                         caches, device, repeats))  # fmt: skip
    if G == HEADS:
        row("SDPA", per_layer_us(lambda k, v: F.scaled_dot_product_attention(q, k, v, mask.to(dtype), scale=scale),
                                 caches, device, repeats))  # fmt: skip
    if smoke or not da.decode_attention_applies(q, caches[0][0]):
        return rows
    default_split = da.split_count(B * G, S, da.sm_count(q.device))
    default = per_layer_us(lambda k, v: da.decode_attention(q, k, v, mask, scale), caches, device, repeats)
    row("triton, default", default, splits=default_split, launch=str(tuple(da.LAUNCH.values())))
    for n in SPLITS:
        if S // n < 64:
            continue
        for block_s, warps, stages in LAUNCHES:
            launch = {"BLOCK_S": block_s, "num_warps": warps, "num_stages": stages}
            fn = lambda k, v, n=n, launch=launch: da.decode_attention(q, k, v, mask, scale, n_split=n, launch=launch)  # noqa: E731
            try:
                us = per_layer_us(fn, caches, device, repeats)
            except Exception as e:  # a launch the GPU refuses (shared memory): reported, the sweep goes on
                print(f"{name} S={S} splits={n} {launch}: {type(e).__name__}: {str(e)[:120]}", flush=True)
                continue
            row("triton", us, splits=n, launch=str((block_s, warps, stages)))
    return rows


def best_rows(rows: list[dict]) -> list[dict]:
    """Per variant and context: the matmul path, SDPA, the kernel's default and its best option."""
    out = []
    for key in dict.fromkeys((r["model"], r["ctx"]) for r in rows):
        mine = [r for r in rows if (r["model"], r["ctx"]) == key]
        sweep = [r for r in mine if r["path"] == "triton"]
        out += [r for r in mine if r["path"] != "triton"]
        if sweep:
            best = min(sweep, key=lambda r: r["us/layer"])
            out.append({**best, "path": "triton, best of the sweep"})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--ctx", type=int, nargs="+", default=[1024, 4096])
    p.add_argument("--variants", nargs="+", default=list(KV_HEADS), choices=list(KV_HEADS))
    p.add_argument("--repeats", type=int, default=20)
    add_output_args(p, HERE, "gqa")
    args = p.parse_args(argv)
    device, dtype = bench_device(args.smoke)
    if args.smoke:
        args.batch, args.ctx, args.variants, args.repeats = 2, [128], ["GQA-4"], 1
    bandwidth = copy_bandwidth(device) if device == "cuda" else None
    rows = []
    for S in args.ctx:
        for name in args.variants:
            rows += variant_rows(name, args.batch, S, device, dtype, args.repeats, bandwidth, args.smoke)
            torch.cuda.empty_cache() if device == "cuda" else None
    table = format_table(best_rows(rows))
    print(table)
    print(format_table(rows))
    hw = hardware()
    out = output_dir(args.out, args.smoke, HERE)
    write_json(out / "decode_attention.json", {"rows": rows}, hardware=hw, copy_bandwidth=bandwidth)
    if args.smoke:
        return 0
    md = (
        f"## Decode attention alone: the Triton kernel's splits and launch options vs the matmul path\n\n"
        f"Hardware: {hw}; measured copy bandwidth {bandwidth / 1e12:.2f} TB/s  \n"
        f"Command: `python benchmarks/decode_attention.py --ctx {' '.join(map(str, args.ctx))}`  \n"
        f"{HEADS} query heads of {HEAD_DIM}, batch {args.batch}, bf16, one new position; {LAYERS} layers' distinct "
        f"caches in one CUDA graph, us per layer (median of {args.repeats} replays / {LAYERS}). Floor = the cache's "
        f"bytes over the copy bandwidth. Launch = (BLOCK_S, num_warps, num_stages).\n\n{table}\n"
    )
    update_results(args.results, "decode-attention", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
