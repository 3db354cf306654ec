"""The fused decode layer alone (`nn/decode_layer_kernel.py`): one persistent kernel per layer of the
1B Llama-shaped decoder (d 2048, 16 query heads of 128, SwiGLU 5632, bf16) at batch 32, against its
floor, with the time of each phase read from the GPU clock inside the kernel.

A layer's floor is its bytes over the copy bandwidth: its weights (q/k/v, o, gate/up, down) read
once and its cache (2 B G S D) read once. Each configuration runs 16 layers' distinct weights and
caches (as in the model, so nothing sits in the L2 between layers) captured in one CUDA graph;
time per layer = replay / 16, median of the repeats. `phases`: with the kernel's clock stamps
(`launch_layer(times=...)`), per phase the median over programs of its work and the wait at the
barrier after it (the slowest program sets the wait), mean over the 16 layers of one replay.

    python benchmarks/decode_layer.py                    # GPU: every variant, the default plan
    python benchmarks/decode_layer.py --sweep            # + launch options and K splits, GQA-4 (own section)
    python benchmarks/decode_layer.py --smoke            # CPU dry run: the floor table only
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from frugalformers.bench import format_table, hardware, update_results, write_json
from frugalformers.bench.report import add_output_args, output_dir
from frugalformers.bench.timing import bench_device, copy_bandwidth, cuda_graph_ms
from frugalformers.nn import decode_layer_kernel as dlk
from frugalformers.nn.positions import RotaryEmbedding

HERE = Path(__file__).resolve().parent
LAYERS = 16
D_MODEL, HEADS, HEAD_DIM, D_FF = 2048, 16, 128, 5632
KV_HEADS = {"MHA": 16, "GQA-8": 8, "GQA-4": 4, "GQA-2": 2, "MQA": 1}
PHASE_NAMES = ("qkv", "attention", "combine", "o", "gate/up", "down")
SWEEP_LAUNCH = ({"num_warps": 4, "num_stages": 3}, {"num_warps": 8, "num_stages": 2}, {"num_warps": 8, "num_stages": 4})
SWEEP_BLOCK_K = (64, 256)
SWEEP_SPLITS = ({"qkv": 1, "o": 1, "gu": 1, "down": 1}, {"qkv": 6, "o": 6, "gu": 2, "down": 6})


def layer_bytes(G: int, B: int, S: int, elt: int = 2) -> dict[str, int]:
    """Bytes each phase must read from memory at least (weights, or the cache)."""
    return {
        "qkv": (HEADS + 2 * G) * HEAD_DIM * D_MODEL * elt,
        "attention": 2 * B * G * S * HEAD_DIM * elt,
        "o": D_MODEL * HEADS * HEAD_DIM * elt,
        "gate/up": 2 * D_FF * D_MODEL * elt,
        "down": D_MODEL * D_FF * elt,
    }


def make_layers(G: int, B: int, S: int, device, dtype):
    """LAYERS distinct layers: the first norm's weight, the weights `launch_layer` takes, caches."""
    std = 0.02
    layers = []
    for _ in range(LAYERS):
        norm1 = torch.ones(D_MODEL, device=device, dtype=dtype)
        w = (
            torch.randn((HEADS + 2 * G) * HEAD_DIM, D_MODEL, device=device, dtype=dtype) * std,
            torch.randn(D_MODEL, HEADS * HEAD_DIM, device=device, dtype=dtype) * std,
            torch.ones(D_MODEL, device=device, dtype=dtype),
            torch.randn(2 * D_FF, D_MODEL, device=device, dtype=dtype) * std,
            torch.randn(D_MODEL, D_FF, device=device, dtype=dtype) * std,
        )
        caches = tuple(torch.randn(B, G, S, HEAD_DIM, device=device, dtype=dtype) * 0.5 for _ in "kv")
        layers.append((norm1, w, caches))
    return layers


def time_layers(
    G: int, B: int, S: int, device, dtype, repeats: int, persistent=True, launch=None, splits=None, block_k=None,
    prefetch=True,
):  # fmt: skip
    """(us per layer, phase table or None) for one configuration."""
    layers = make_layers(G, B, S, device, dtype)
    shape = dlk.LayerShape(B, D_MODEL, HEADS, G, HEAD_DIM, D_FF, S)
    buffers = dlk.FusedLayerBuffers.make(
        shape, dtype, torch.device(device), block_k=block_k or dlk.BLOCK_K, splits=splits
    )
    rope = RotaryEmbedding(HEAD_DIM, S).to(device)
    x = torch.randn(B, D_MODEL, device=device, dtype=dtype)
    pos = torch.full((1,), S - 8, device=device, dtype=torch.long)
    bias = dlk.attention_bias(None, pos, B, S)
    times = torch.zeros(LAYERS, buffers.programs, dlk.STAMPS, dtype=torch.int64, device=device)

    def run(stamps: bool = False):
        h = x
        xw, ssq = dlk.norm_input(h, layers[0][0], buffers.plan["block_m"])
        for i, (_, w, (k, v)) in enumerate(layers):
            stamp = times[i] if stamps else None
            next_norm, next_w, _ = layers[(i + 1) % LAYERS]
            h, xw, ssq = dlk.launch_layer(h, xw, ssq, w, next_norm, next_w[0], k, v, rope.cos, rope.sin, pos, pos, bias,
                                          buffers, 1e-5, HEAD_DIM**-0.5, persistent, launch, times=stamp,
                                          prefetch=prefetch)  # fmt: skip
        return h

    with torch.no_grad():
        us = cuda_graph_ms(run, repeats) * 1e3 / LAYERS if device == "cuda" else float("nan")
        buffers.check()
        phases = None
        if device == "cuda" and persistent:
            run(stamps=True)
            torch.cuda.synchronize()
            phases = phase_table(times.cpu(), buffers.plan["n_split"] > 1)
    return us, phases, buffers.plan


def phase_table(times: torch.Tensor, split: bool) -> dict[str, float]:
    """us per phase (work: median over programs; wait: the barrier after it, median) from the stamps
    (LAYERS, programs, STAMPS), mean over layers."""
    out: dict[str, float] = {}
    for k, name in enumerate(PHASE_NAMES):
        if name == "combine" and not split:
            continue
        start = 0 if k == 0 else (2 * k if not (k == 3 and not split) else 4)
        work, wait = [], []
        for layer in times:
            t = layer.double()
            work.append(statistics.median((t[:, 1 + 2 * k] - t[:, start]).tolist()) / 1e3)
            if k < 5:
                wait.append(statistics.median((t[:, 2 + 2 * k] - t[:, 1 + 2 * k]).tolist()) / 1e3)
        out[f"{name} us"] = statistics.fmean(work)
        if wait:
            out[f"{name} wait"] = statistics.fmean(wait)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--ctx", type=int, default=1024)
    p.add_argument("--variants", nargs="*", choices=list(KV_HEADS), default=list(KV_HEADS))
    p.add_argument("--sweep", action="store_true", help="also launch options and K splits (GQA-4)")
    p.add_argument("--repeats", type=int, default=20)
    add_output_args(p, HERE)
    args = p.parse_args(argv)
    device, dtype = bench_device(args.smoke)
    B, S = (args.batch, args.ctx) if not args.smoke else (2, 64)
    bw = copy_bandwidth(device) if device == "cuda" else None
    rows = []
    configs = [(name, "default", {}) for name in args.variants]  # (variant, label, time_layers options)
    configs += [("GQA-4", "a launch per phase", {"persistent": False}), ("GQA-4", "no prefetch", {"prefetch": False})]
    if args.sweep:
        configs += [("GQA-4", f"w{lo['num_warps']} s{lo['num_stages']}", {"launch": lo}) for lo in SWEEP_LAUNCH]
        configs += [("GQA-4", f"BLOCK_K {bk}", {"block_k": bk}) for bk in SWEEP_BLOCK_K]
        configs += [("GQA-4", "K splits " + str(sp), {"splits": sp}) for sp in SWEEP_SPLITS]
    for name, how, options in configs:
        G = KV_HEADS[name]
        nbytes = layer_bytes(G, B, S)
        floor = sum(nbytes.values()) / bw * 1e6 if bw else None
        row = {"model": name, "kv heads": G, "batch": B, "ctx": S, "config": how, "floor us": floor}
        if device == "cuda":
            try:
                us, phases, plan = time_layers(G, B, S, device, dtype, args.repeats, **options)
            except Exception as e:  # noqa: BLE001 - a configuration that fails is reported in its row
                row["us/layer"] = f"error {type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}"
                rows.append(row)
                continue
            row.update({"us/layer": us, "/ floor": us / floor})
            row["plan"] = " ".join(f"{k}:{plan[k][0]}x{plan[k][1]}" for k in ("qkv", "o", "gu", "down"))
            row["plan"] += f" attn splits:{plan['n_split']}"
            row.update(phases or {})
            for ph, nb in nbytes.items():
                if phases and f"{ph} us" in phases:
                    row[f"{ph} floor"] = nb / bw * 1e6
        rows.append(row)
        print(format_table([row]).splitlines()[-1], flush=True)
    table = format_table(rows)
    print(table)
    hw = hardware()
    print(hw, f"copy bandwidth {bw / 1e12:.2f} TB/s" if bw else "")
    out = output_dir(args.out, args.smoke, HERE)
    name = "decode_layer" + ("_sweep" if args.sweep else "")  # a sweep keeps its own file and section
    write_json(out / f"{name}.json", rows, hardware=hw, copy_bandwidth=bw)
    if args.smoke:
        return 0
    command = "python benchmarks/decode_layer.py" + (" --sweep" if args.sweep else "")
    md = (
        "## Fused decode layer alone: one persistent kernel per layer, by phase\n\n"
        f"Hardware: {hw}" + (f"; measured copy bandwidth {bw / 1e12:.2f} TB/s" if bw else "") + "  \n"
        f"Command: `{command}`  \n"
        f"1B Llama-shaped layer, batch {B}, context {S}, bf16; 16 layers' distinct weights and caches in one CUDA "
        "graph, us per layer (median replay / 16). Floor = the layer's weight and cache bytes over the copy "
        "bandwidth. Phase columns: the GPU clock inside the kernel (median over programs, mean over layers): "
        "`us` a phase's work, `wait` the barrier after it, `floor` its bytes over the bandwidth. Plan: K splits x "
        "column block per GEMM.\n\n" + table + "\n"
    )
    update_results(args.results, name.replace("_", "-"), md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
