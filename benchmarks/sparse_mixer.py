"""The MoE layer against a dense FFN of equal active FLOPs, and Sparse Mixer against BERT-Base.

Part 1 (MoE layer, d 768 / d_ff 3072, 32k tokens, fwd + bwd, bf16 autocast): each routing with
8 / 16 / 64 experts vs a dense FFN doing the same active FLOPs per token (experts-choose at
capacity factor 1 and tokens-choose top-1: d_ff 3072; top-2: 6144), and vs Hugging Face
`SwitchTransformersSparseMLP` (top-1) where it builds.
Part 2: Sparse Mixer Base and Fast Sparse Mixer Base vs our BERT-Base (SDPA) and HF BertModel,
training step and inference at seq 512, tokens/s and peak memory (the paper's ratios: 1.65x /
1.61x and 1.89x / 1.98x).

    python benchmarks/sparse_mixer.py
    python benchmarks/sparse_mixer.py --compile   # every layer and model through torch.compile
    python benchmarks/sparse_mixer.py --smoke
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from frugalformers import build_model
from frugalformers.bench import format_table, hardware, measure, update_results, write_json
from frugalformers.bench.steps import bf16_autocast, step_fns
from frugalformers.convert.hf import to_hf_model
from frugalformers.nn.ffn import FeedForward
from frugalformers.nn.moe import MoEFeedForward

HERE = Path(__file__).resolve().parent


def layer_rows(d, d_ff, tokens, experts_list, device, autocast, warmup, repeats, compile=False):
    rows = []
    x = torch.randn(tokens // 512, 512, d, device=device, requires_grad=True)

    def time_module(mod, returns_aux):
        if compile:  # dense and MoE alike; data-dependent routing shapes graph-break where they must
            torch._dynamo.reset()
            mod = torch.compile(mod, dynamic=False)

        def step():
            with autocast():
                y = mod(x)
                y = y[0] if returns_aux else y
            y.float().square().mean().backward()

        return measure(step, warmup=warmup, repeats=repeats, device=device).median_ms

    dense_ms = {}
    for k in (1, 2):
        dense = FeedForward(d, d_ff * k, "gelu").to(device)
        dense_ms[k] = time_module(dense, False)
        rows.append({"layer": f"dense FFN d_ff {d_ff * k}", "experts": 1, "fwd+bwd ms": dense_ms[k], "vs dense": 1.0})
    for E in experts_list:
        for routing, k in (("experts_choose", 1), ("tokens_choose", 1), ("tokens_choose", 2), ("dropless", 1)):
            moe = MoEFeedForward(d, d_ff, n_experts=E, routing=routing, top_k=k, expert_dropout=0.0).to(device)
            try:
                ms = time_module(moe, True)
                rows.append(
                    {"layer": f"ours {routing} top-{k}", "experts": E, "fwd+bwd ms": ms, "vs dense": dense_ms[k] / ms}
                )
            except (torch.OutOfMemoryError, RuntimeError) as e:
                rows.append({"layer": f"ours {routing} top-{k}", "experts": E, "fwd+bwd ms": f"error {str(e)[:40]}"})
        try:
            import transformers
            from transformers.models.switch_transformers import modeling_switch_transformers as st

            cfg = transformers.SwitchTransformersConfig(
                d_model=d, d_ff=d_ff, num_experts=E, expert_capacity=max(4, tokens // E), router_jitter_noise=0.0
            )
            hf = st.SwitchTransformersSparseMLP(cfg).to(device)
            ms = time_module(hf, True)
            rows.append(
                {
                    "layer": "HF SwitchTransformersSparseMLP top-1",
                    "experts": E,
                    "fwd+bwd ms": ms,
                    "vs dense": dense_ms[1] / ms,
                }
            )
        except Exception as e:  # noqa: BLE001 - report what the peer does on this stack
            rows.append(
                {
                    "layer": "HF SwitchTransformersSparseMLP top-1",
                    "experts": E,
                    "fwd+bwd ms": f"error {type(e).__name__}: {str(e)[:40]}",
                }
            )
    return rows


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
        if compile:
            torch._dynamo.reset()
            model = torch.compile(model, dynamic=False)
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=32768)
    p.add_argument("--experts", type=int, nargs="+", default=[8, 16, 64])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile every layer and model (section -compiled)")
    p.add_argument("--results", default=str(HERE / "RESULTS.md"))
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    d, d_ff, seq = 768, 3072, 512
    if args.smoke:
        d, d_ff, seq, args.tokens, args.experts, args.repeats, args.warmup = 32, 64, 128, 1024, [4], 2, 1
    autocast = bf16_autocast(device)
    layers = layer_rows(d, d_ff, args.tokens, args.experts, device, autocast, args.warmup, args.repeats, args.compile)
    print(format_table(layers), flush=True)
    models = model_rows(seq, args.tokens, device, autocast, args.warmup, args.repeats, args.smoke, args.compile)
    t1, t2 = format_table(layers), format_table(models)
    print(t2)
    hw = hardware()
    print(hw)
    tag = "_compiled" if args.compile else ""
    write_json((Path(args.out) if args.out else HERE) / f"sparse_mixer{tag}.json", layers + models, hardware=hw)
    if not args.smoke:
        md = (
            f"## MoE layer and Sparse Mixer{', compiled' if args.compile else ''}\n\nHardware: {hw}  \n"
            f"Command: `python benchmarks/sparse_mixer.py{' --compile' if args.compile else ''}`  \n"
            f"bf16 autocast, {args.tokens} tokens, median of {args.repeats}. MoE layer: d {d}, expert d_ff {d_ff}, "
            f"forward + backward; `vs dense` = the dense FFN of equal active FLOPs over the row (>1: faster)."
            f"\n\n{t1}\n\nSparse Mixer vs BERT-Base at seq {seq} (train = forward + loss + backward + fused "
            f"AdamW):\n\n{t2}\n"
        )
        update_results(args.results, "sparse-mixer" + tag.replace("_", "-"), md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
