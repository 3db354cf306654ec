"""Our BERT-Base against Hugging Face `BertModel` (SDPA attention), same weights, one process.

Train step (forward, loss, backward, fused AdamW step) and inference (forward, no grad), bf16
autocast, at sequence lengths 512 / 2048 / 8192 with a fixed token budget per batch. Prints a
table and writes it into benchmarks/RESULTS.md (section `encoders`) with the hardware and command.

Floor, written before measuring (BERT-Base, forward FLOPs per token = 2 * 85M non-embedding
params + 4 * T * d * L for attention = 189 MFLOP at T=512, 340 at 2048, 944 at 8192; training
is 3x that). At the H200's measured ~790 TFLOP/s bf16 the train floor is ~1.4M tokens/s at 512;
eager BERT-Base is launch- and elementwise-bound well above that, so expect 30-50% MFU. Our
model and HF's run the same kernels (cuBLAS GEMMs, flash SDPA), so the expectation is parity.

    python benchmarks/encoders.py                 # GPU: the full table
    python benchmarks/encoders.py --compile       # both models under torch.compile
    python benchmarks/encoders.py --smoke         # CPU, tiny: checks the script runs
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from frugalformers import build_model
from frugalformers.bench import format_table, hardware, measure, mfu, peak_flops, update_results, write_json
from frugalformers.bench.flops import flops_per_token
from frugalformers.bench.steps import bf16_autocast, step_fns
from frugalformers.convert.hf import to_hf_model

HERE = Path(__file__).resolve().parent
NOTES = {
    "eager": (
        "Expected parity (both run cuBLAS GEMMs and flash SDPA); measured 1.01x (train) and 1.02-1.07x "
        "(inference). Floor at 512 (train, 567 MFLOP/token at ~790 TFLOP/s measured bf16): ~1.4M tokens/s; "
        "eager BERT-Base reaches ~27% MFU, the rest is elementwise work (LayerNorm, GELU, dropout, residuals) "
        "between the GEMMs, which compile fuses."
    ),
    "compiled": (
        "Under torch.compile HF BertModel's peak memory grows with the square of the sequence length (24 GiB at "
        "512, 60 GiB at 2048, OOM at 8192 in training), i.e. its attention scores are materialised: the compiled "
        "graph does not reach the flash kernel. We did not trace why inside transformers. Our model keeps "
        "SDPA's flash path under compile (13 GiB at every length), so the gap here is mostly attention, and "
        "grows with length."
    ),
}
COLUMNS = ["model", "mode", "seq", "batch", "ms (median)", "spread", "tokens/s", "MFU", "peak GiB", "ours / HF"]


def make_models(preset: str, max_len: int, device: str, dtype_params=torch.float32):
    ours = build_model(preset, head="base", max_seq_len=max_len, pooler=True)
    hf = to_hf_model(ours)  # identical weights
    hf.config._attn_implementation = "sdpa"
    for layer in hf.encoder.layer:  # transformers >= 5 reads the implementation from the config at call time
        layer.attention.self.config._attn_implementation = "sdpa"
    return ours.to(device, dtype_params), hf.to(device, dtype_params)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq", type=int, nargs="+", default=[512, 2048, 8192])
    p.add_argument("--tokens", type=int, default=32768, help="tokens per batch (batch = tokens / seq)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--smoke", action="store_true", help="tiny preset on CPU, no RESULTS.md")
    p.add_argument("--results", default=str(HERE / "RESULTS-bert.md"))
    p.add_argument("--json", default=None, help="also dump rows as JSON here")
    args = p.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    preset = "bert-tiny" if args.smoke else "bert-base"
    if args.smoke:
        args.seq, args.tokens, args.repeats, args.warmup = [64, 128], 256, 2, 1
    torch.manual_seed(0)
    ours, hf = make_models(preset, max(args.seq), device)
    autocast = bf16_autocast(device)

    if args.compile:
        from torch import _dynamo

        _dynamo.config.automatic_dynamic_shapes = False  # one static graph per shape, as in training
        _dynamo.config.cache_size_limit = 64
        ours, hf = torch.compile(ours), torch.compile(hf)
    print(f"HF attention implementation: {hf.config._attn_implementation}", flush=True)
    peak = peak_flops()
    rows = []
    for T in args.seq:
        B = max(1, args.tokens // T)
        ids = torch.randint(0, 1000, (B, T), device=device)
        fwd_flops = flops_per_token(build_model(preset, head="base", max_seq_len=max(args.seq)).config, T) * B * T
        for mode in ("train", "inference"):
            res = {}
            for kind, model in (("ours", ours), ("hf", hf)):
                infer, train = step_fns(model, ids, autocast)
                fn = train if mode == "train" else infer
                row = {
                    "model": f"frugalformers {preset}" if kind == "ours" else "HF BertModel (sdpa)",
                    "mode": mode,
                    "seq": T,
                    "batch": B,
                }
                try:
                    t = measure(fn, warmup=args.warmup, repeats=args.repeats, device=device)
                except torch.OutOfMemoryError:
                    row["ms (median)"] = "OOM"
                    res[kind] = None
                else:
                    flops = fwd_flops * (3 if mode == "train" else 1)
                    res[kind] = t
                    row.update(
                        {
                            "ms (median)": t.median_ms,
                            "spread": t.spread,
                            "tokens/s": B * T / (t.median_ms / 1e3),
                            "MFU": mfu(flops, t.median_ms / 1e3, peak),
                            "peak GiB": t.peak_mem_gib,
                        }
                    )
                rows.append(row)
                if device == "cuda":
                    torch.cuda.empty_cache()
            if res["hf"] is not None and res["ours"] is not None:
                rows[-2]["ours / HF"] = res["hf"].median_ms / res["ours"].median_ms
            print("\n".join(format_table(rows[-2:], COLUMNS).splitlines()[-2:]), flush=True)
    table = format_table(rows, COLUMNS)
    print(table)
    hw = hardware()
    print(hw)
    if args.json:
        write_json(args.json, rows, hardware=hw, argv=sys.argv)
    if not args.smoke:
        shown = [a for a in (argv or sys.argv[1:]) if a != args.json and a != "--json"]  # where the dump went
        cmd = "python benchmarks/encoders.py " + " ".join(shlex.quote(a) for a in shown)
        section = "encoders-compiled" if args.compile else "encoders"
        md = (
            f"## BERT-Base: ours vs Hugging Face BertModel ({'torch.compile' if args.compile else 'eager'})\n\n"
            f"Hardware: {hw}  \nCommand: `{cmd.strip()}`  \n"
            f"bf16 autocast, fp32 weights, {args.tokens} tokens per batch, median of {args.repeats} after "
            f"{args.warmup} warm-up; train = forward + loss + backward + fused AdamW step; same weights in both. "
            f"`ours / HF` = HF time over ours (>1: ours faster). MFU against the {peak / 1e12 if peak else '?'} "
            f"TFLOP/s datasheet bf16 peak.\n\n{table}\n\n{NOTES['compiled' if args.compile else 'eager']}\n"
        )
        update_results(args.results, section, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
