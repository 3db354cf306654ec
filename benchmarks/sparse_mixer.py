"""Sparse Mixer Base and Fast Sparse Mixer Base against our BERT-Base (SDPA) and HF BertModel:
training step and inference at seq 512, tokens/s and peak memory (the paper's ratios: 1.65x /
1.61x and 1.89x / 1.98x). The MoE layer alone: `benchmarks/moe.py`.

    python benchmarks/sparse_mixer.py
    python benchmarks/sparse_mixer.py --compile   # every model through torch.compile
    python benchmarks/sparse_mixer.py --profile   # kernel time by category, SM-Base vs BERT-Base
    python benchmarks/sparse_mixer.py --smoke
"""

from __future__ import annotations

import argparse
import sys
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
from frugalformers.bench.steps import add_compile_flags, bf16_autocast, compile_setting, compiled, step_fns
from frugalformers.convert.hf import to_hf_model

HERE = Path(__file__).resolve().parent


def model_rows(seq, tokens, device, autocast, warmup, repeats, smoke, compile=False):
    rows, base = [], {}
    names = [
        ("BERT-Base (ours, sdpa)", "bert-tiny" if smoke else "bert-base", False),
        ("Sparse Mixer Base", "sparse-mixer-tiny" if smoke else "sparse-mixer-base", False),
        ("Fast Sparse Mixer Base", "sparse-mixer-tiny" if smoke else "fast-sparse-mixer-base", False),
        ("HF BertModel (sdpa)", "bert-tiny" if smoke else "bert-base", True),
    ]
    B = max(1, tokens // seq)
    ids = torch.randint(0, 1000, (B, seq), device=device)
    for label, preset, hf in names:
        torch.manual_seed(0)
        model = build_model(preset, head="base", max_seq_len=seq)
        if hf:
            model = to_hf_model(model)
            model.config._attn_implementation = "sdpa"
        model = model.to(device)
        model = compiled(model, compile)
        infer, train = step_fns(model, ids, autocast)
        for mode, fn in (("train", train), ("inference", infer)):
            t = measure(fn, warmup=warmup, repeats=repeats, device=device)
            if label.startswith("BERT-Base (ours"):
                base[mode] = t.median_ms
            rows.append(
                {
                    "model": label,
                    "mode": mode,
                    "seq": seq,
                    "batch": B,
                    "ms": t.median_ms,
                    "tokens/s": B * seq / (t.median_ms / 1e3),
                    "vs our BERT": base[mode] / t.median_ms,
                    "peak GiB": t.peak_mem_gib,
                }
            )
        del model
    return rows


def model_profiles(seq, tokens, device, autocast, smoke, compile=False):
    """Kernel time by category for the training step and inference of BERT-Base and Sparse Mixer Base."""
    B = max(1, tokens // seq)
    ids = torch.randint(0, 1000, (B, seq), device=device)
    out = []
    for label, preset in (("BERT-Base (ours, sdpa)", "bert"), ("Sparse Mixer Base", "sparse-mixer")):
        torch.manual_seed(0)
        model = build_model(f"{preset}-{'tiny' if smoke else 'base'}", head="base", max_seq_len=seq).to(device)
        model = compiled(model, compile)
        infer, train = step_fns(model, ids, autocast)
        for mode, fn in (("train", train), ("inference", infer)):
            out.append((f"{label}, {mode}, seq {seq} x {B}", profile_step(fn, device)))
        del model
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=32768)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    add_compile_flags(p, "torch.compile every model (section -compiled)")
    p.add_argument("--profile", action="store_true", help="kernel time by category instead of the timing table")
    add_output_args(p, HERE, "sparse-mixer")
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    seq = 512
    if args.smoke:
        seq, args.tokens, args.repeats, args.warmup = 128, 1024, 2, 1
    autocast = bf16_autocast(device)
    setting = compile_setting(p, args)
    tag = setting.suffix
    command = f"python benchmarks/sparse_mixer.py{setting.flags}"
    command += "".join(  # the options that change the numbers, where not their defaults
        f" --{k} {getattr(args, k)}" for k in ("tokens", "repeats", "warmup") if getattr(args, k) != p.get_default(k)
    )
    if args.profile:
        md = profiles_markdown(
            f"Sparse Mixer Base vs BERT-Base: where the time goes{setting.title}",
            command + " --profile",
            model_profiles(seq, args.tokens, device, autocast, args.smoke, setting.how),
            "bf16 autocast; train = forward + loss + backward + fused AdamW.",
        )
        print(md)
        if not args.smoke:
            update_results(args.results, "sparse-mixer-profile" + tag, md)
        return 0
    models = model_rows(seq, args.tokens, device, autocast, args.warmup, args.repeats, args.smoke, setting.how)
    table, hw = format_table(models), hardware()
    print(table)
    print(hw)
    write_json(
        output_dir(args.out, args.smoke, HERE) / f"sparse_mixer{tag.replace('-', '_')}.json", models, hardware=hw
    )
    if not args.smoke:
        md = (
            f"## Sparse Mixer vs BERT-Base{setting.title}\n\nHardware: {hw}  \n"
            f"Command: `{command}`  \n"
            f"bf16 autocast, {args.tokens} tokens, median of {args.repeats}, seq {seq} (train = forward + loss + "
            f"backward + fused AdamW).\n\n{table}\n"
        )
        update_results(args.results, "sparse-mixer-models" + tag, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
