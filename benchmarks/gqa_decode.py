"""Decode speed of the 1B Llama-shaped preset with 16 / 8 / 4 / 2 / 1 kv heads (MHA ... MQA).

One decode step (batch B, one new token per row, static KV cache holding ctx positions; q/k/v
and gate/up fused into one GEMM each while the cache is set up, `nn/fused_linear.py`) is
captured in a CUDA graph and replayed (gpt-fast's method: no launch gaps), bf16 weights and cache.
Attention over the cache takes our grouped path (each kv head read once for its query group).
For each step: ms, tokens/s, KV-cache bytes, the floor (weights + the KV read, over the measured
device copy bandwidth) and achieved bandwidth. The same weights run through Hugging Face
`LlamaForCausalLM.generate` (greedy, its default cache) for comparison. The cache is filled with
random values: the cost of a step does not depend on them.

Floor, before measuring (B=32, ctx=1024): weights read 1.77 GB (MHA) .. 1.52 GB (MQA) (the LM head
reads its whole table, the input embedding only B rows); KV 4.3 GB (MHA), 1.07 GB (GQA-4), 0.27 GB
(MQA): ~1.43 / 0.62 / 0.42 ms at ~4.3 TB/s. (Runs before 2026-12-01 counted the whole input
embedding table, 131 MB, as read: their floors are ~0.03 ms higher.)

With `--compile` the step is first compiled (`torch.compile`, static shapes: the elementwise
work between the GEMMs fuses into a few kernels) and then captured, as `generate(compile=True)`
does; those rows go to the section `gqa-decode-compiled`.

`--alts` times the same step with another decode attention path (ALTS) beside the default one, in
the same process: `triton-attn` (the flash-decoding kernel, `kernels/decode_attention.py`, everywhere)
and `matmul-attn` (two batched matmuls). Paths tried earlier and removed after measuring (a Triton
decode GEMM, split-K GEMMs, SDPA / FlexAttention on regrouped heads, programmatic dependent launch,
a fused persistent decode layer) are summarised in RESULTS.md.

    python benchmarks/gqa_decode.py
    python benchmarks/gqa_decode.py --compile --batch 32 --ctx 1024 16384
    python benchmarks/gqa_decode.py --compile --batch 32 --ctx 1024 --alts triton-attn matmul-attn
    python benchmarks/gqa_decode.py --smoke      # CPU, tiny, eager
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from frugalformers import build_model
from frugalformers.bench import (
    format_table,
    hardware,
    merge_json,
    plot_lines,
    profiles_markdown,
    update_results,
)
from frugalformers.bench.decode import decode_step_time, step_weight_bytes
from frugalformers.bench.report import add_output_args, output_dir
from frugalformers.bench.timing import bench_device, copy_bandwidth

HERE = Path(__file__).resolve().parent
VARIANTS = [("MHA", 16), ("GQA-8", 8), ("GQA-4", 4), ("GQA-2", 2), ("MQA", 1)]
ALTS = {  # decode attention paths (setup_cache's grouped_decode), timed beside the default step with --alts
    "triton-attn": {"grouped_decode": "triton"},
    "matmul-attn": {"grouped_decode": "matmul"},  # the default before "auto" took the Triton kernel on CUDA
}


def hf_step_time(model, B: int, ctx: int, device: str, new_tokens: int = 32) -> float:
    """Hugging Face generate, ms per decode step: (t(1 + n tokens) - t(1 token)) / n."""
    from frugalformers.convert.hf import to_hf_model

    hf = to_hf_model(model).to(device=device, dtype=next(model.parameters()).dtype).eval()
    ids = torch.randint(10, model.config.vocab_size, (B, ctx), device=device)

    def run(n):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        hf.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=0,
        )
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    with torch.no_grad():
        run(2)
        one = statistics.median(run(1) for _ in range(3))
        many = statistics.median(run(1 + new_tokens) for _ in range(3))
    return (many - one) / new_tokens * 1e3


HF_DEFAULT = ["MHA", "GQA-4"]


def hf_choice(asked: list[str] | None, known: list[str], running: list[str]) -> list[str]:
    """The variants timed through HF generate: `--hf` absent: HF_DEFAULT; bare: every variant run;
    `--hf none`: none; else the names given (each one of `known`)."""
    if asked is None:
        return HF_DEFAULT
    if not asked:
        return running
    if asked == ["none"]:
        return []
    bad = [v for v in asked if v not in known]
    if bad:
        raise SystemExit(f"--hf {' '.join(bad)}: not a variant; choose from {' '.join(known)} (or none)")
    return asked


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--ctx", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument(
        "--hf",
        nargs="*",
        default=None,
        metavar="VARIANT",
        help=f"variants also timed through HF generate (default {' '.join(HF_DEFAULT)}; --hf alone: every "
        "variant; --hf none: none)",
    )
    p.add_argument("--compile", action="store_true", help="compile the step before capturing it")
    p.add_argument("--autotune", action="store_true", help="with --compile: autotune the GEMMs (max-autotune)")
    p.add_argument("--profile", action="store_true", help="kernel time by category of each step (section -profile)")
    p.add_argument(
        "--alts", nargs="*", default=[], choices=sorted(ALTS), help="also time each step with these decode kernels"
    )
    p.add_argument("--variants", nargs="*", default=None, help="subset of MHA GQA-8 GQA-4 GQA-2 MQA")
    add_output_args(p, HERE, "gqa")
    args = p.parse_args(argv)
    device, dtype = bench_device(args.smoke)
    preset = "llama-1b"
    variants = VARIANTS
    if args.smoke:
        preset, args.batch, args.ctx, args.repeats = "llama-tiny", [2], [32], 3
        variants = [("MHA", 8), ("GQA-4", 4), ("MQA", 1)]
    if args.variants:
        variants = [v for v in variants if v[0] in args.variants]
    hf_variants = hf_choice(args.hf, [v for v, _ in VARIANTS], [v for v, _ in variants])
    bw = copy_bandwidth(device) if device == "cuda" else None
    rows, profiles = [], []
    step_profiles = [] if args.profile else None
    for label, kv in variants:
        torch.manual_seed(0)
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        with torch.device(device):
            model = build_model(preset, n_kv_heads=kv, max_seq_len=max(args.ctx) + 64).eval()
        torch.set_default_dtype(default)
        c = model.config
        for B in args.batch:
            weight_bytes = step_weight_bytes(model, B)
            for ctx in args.ctx:
                kv_bytes = 2 * c.n_layers * B * kv * ctx * c.resolved_head_dim * (2 if device == "cuda" else 4)
                row = {"model": label, "kv heads": kv, "batch": B, "ctx": ctx}
                try:
                    ms = decode_step_time(
                        model,
                        B,
                        ctx,
                        device,
                        device == "cuda",
                        args.repeats,
                        "autotune" if args.compile and args.autotune else args.compile,
                        step_profiles,
                    )
                    if step_profiles is not None:
                        profiles.append((f"{label}, batch {B}, ctx {ctx}", step_profiles.pop()))
                except torch.OutOfMemoryError:
                    row["ms/step"] = "OOM"
                    rows.append(row)
                    continue
                floor = (weight_bytes + kv_bytes) / bw * 1e3 if bw else None
                row.update(
                    {
                        "ms/step": ms,
                        "tokens/s": B / ms * 1e3,
                        "KV MB": kv_bytes / 1e6,
                        "floor ms": floor,
                        "step / floor": ms / floor if floor else None,
                        "GB/s": (weight_bytes + kv_bytes) / ms / 1e6,
                    }
                )
                timed = {repr([]): ms}  # effective decode options -> ms (MHA has no grouped path to switch)
                for alt in args.alts:  # the same step with opt-in decode kernels, in the same process
                    options = {  # MHA has no grouped path to switch, except the Triton kernel (groups of one)
                        k: v for k, v in ALTS[alt].items() if k != "grouped_decode" or kv < c.n_heads or v == "triton"
                    }
                    key = repr(sorted(options.items()))
                    if key not in timed:
                        how = "autotune" if args.compile and args.autotune else args.compile
                        try:
                            timed[key] = decode_step_time(model, B, ctx, device, device == "cuda", args.repeats, how,
                                                          step_profiles, **options)  # fmt: skip
                        except Exception as e:  # noqa: BLE001 - an opt-in kernel that fails is reported in its cell
                            print(f"{label} {alt}: {type(e).__name__}: {e}", flush=True)
                            model.clear_cache()
                            timed[key] = f"error {type(e).__name__}: {str(e).splitlines()[0][:60] if str(e) else ''}"
                        if step_profiles is not None and step_profiles:
                            profiles.append((f"{label}, batch {B}, ctx {ctx}, {alt}", step_profiles.pop()))
                    alt_ms = timed[key]
                    row[f"{alt} ms/step"] = alt_ms
                    if isinstance(alt_ms, str):
                        continue
                    row[f"{alt} gain"] = ms / alt_ms
                    row[f"{alt} / floor"] = alt_ms / floor if floor else None
                if label in hf_variants and B == max(args.batch) and ctx == min(args.ctx):
                    hf_ms = hf_step_time(model, B, ctx, device)
                    row["HF generate ms/step"] = hf_ms
                    row["ours vs HF"] = hf_ms / ms
                rows.append(row)
                print(format_table([row], COLUMNS).splitlines()[-1], flush=True)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    table = format_table(rows, [col for col in COLUMNS if any(col in r for r in rows)])  # the columns measured
    print(table)
    hw = hardware()
    print(hw, f"copy bandwidth {bw / 1e12:.2f} TB/s" if bw else "")
    out = output_dir(args.out, args.smoke, HERE)
    tag = ("_autotuned" if args.autotune else "_compiled") if args.compile else ""
    subset = "".join(f"-{v}" for v in args.variants) if args.variants else ""  # a subset run keeps its own section
    if args.variants and args.batch != [32]:  # (the targets are at batch 32: other batches apart)
        subset += "-batch-" + "-".join(map(str, args.batch))
    if args.alts and not args.variants:  # a full run with opt-in kernels keeps its own section too
        subset = "-" + "-".join(args.alts)
    # one file per setting (eager / compiled / autotuned): a run over some variants or batches
    # replaces its own rows and keeps the rest
    merged = merge_json(out / f"gqa_decode{tag}.json", rows, ("model", "batch", "ctx"), hardware=hw, copy_bandwidth=bw)
    shapes = f" --batch {' '.join(map(str, args.batch))} --ctx {' '.join(map(str, args.ctx))}"
    flags = " --compile" + (" --autotune" if args.autotune else "") + shapes if args.compile else ""
    flags += f" --alts {' '.join(args.alts)}" if args.alts else ""
    # a run over some variants writes its own sections (the full run's stay)
    flags += f" --variants {' '.join(args.variants)}" if args.variants else ""
    flags += "" if args.hf is None else " --hf" + "".join(f" {v}" for v in args.hf)
    command = "python benchmarks/gqa_decode.py" + flags + (" --profile" if args.profile else "")
    if profiles:
        md = profiles_markdown(
            f"GQA decoding: where a step's time goes{', ' + tag[1:] if args.compile else ''}",
            command + (shapes if not args.compile else ""),
            profiles,
            "One decode step replayed from a CUDA graph (eager on CPU), bf16 weights and static cache.",
        )
        print(md)
        if not args.smoke:
            update_results(args.results, "gqa-decode-profile" + tag.replace("_", "-") + subset, md)
    if args.smoke:
        return 0
    series = {}
    for r in merged:  # the setting's file: this run's rows and the earlier runs' it kept
        if isinstance(r.get("ms/step"), float) and r["batch"] == max(args.batch):
            xs, ys = series.setdefault(f"batch {r['batch']}, ctx {r['ctx']}", ([], []))
            xs.append(r["kv heads"])
            ys.append(r["ms/step"])
    plot_lines(
        out / f"gqa_decode{tag}.png",
        series,
        "key/value heads",
        "ms per decode step",
        f"1B decoder: decode step time vs kv heads (H200, bf16, CUDA graph{', compiled' if args.compile else ''})",
        logx=True,
    )
    how = "compiled (torch.compile, static shapes" + (", GEMMs autotuned" if args.autotune else "") + "), then "
    md = (
        f"## GQA decoding: 1B Llama-shaped decoder, MHA to MQA{', ' + tag[1:] + ' step' if args.compile else ''}"
        + (f" ({subset[1:].replace('-', ' ')})" if subset else "")
        + "\n\n"
        f"Hardware: {hw}; measured copy bandwidth {bw / 1e12:.2f} TB/s  \nCommand: `{command}`  \n"
        f"One decode step {how if args.compile else ''}replayed from a "
        f"CUDA graph, bf16 weights and static cache, median of {args.repeats}. Floor = (weight bytes + KV bytes "
        f"read) / copy bandwidth. HF = `LlamaForCausalLM.generate` on the same weights (greedy, its default "
        f"cache), per-step time from 33 vs 1 new tokens.\n\n{table}\n\n![](results/gqa_decode{tag}.png)\n"
    )
    update_results(args.results, "gqa-decode" + tag.replace("_", "-") + subset, md)
    return 0


COLUMNS = [
    "model",
    "kv heads",
    "batch",
    "ctx",
    "ms/step",
    "tokens/s",
    "KV MB",
    "floor ms",
    "step / floor",
    "GB/s",
    "HF generate ms/step",
    "ours vs HF",
    *(f"{alt} {col}" for alt in ALTS for col in ("ms/step", "gain", "/ floor")),
]

if __name__ == "__main__":
    sys.exit(main())
