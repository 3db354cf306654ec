"""CoLT5 vs LongT5: encoder speed at long inputs, one CoLT5 block vs lucidrains' `colt5-attention`
block, and encode + decode time (the paper's Table 8 setting: 16k in, 128 out).

    python benchmarks/colt5.py                          # GPU, the full grid
    python benchmarks/colt5.py --seq 4096 16384 --skip-decode
    python benchmarks/colt5.py --profile                # kernel time by category, 16k tokens
    python benchmarks/colt5.py --smoke                  # CPU, tiny presets

Encoder rows (bf16 autocast, batch 1, median of repeats): CoLT5-Base (ours) against our
LongT5-Base with transient-global attention (the paper's baseline), Hugging Face
`LongT5EncoderModel` (transient-global, same shapes, random weights) and Hugging Face
`T5EncoderModel` (full attention, SDPA) where it fits; inference and a training step (forward,
mean-square loss, backward, fused AdamW). Block rows: one CoLT5 encoder layer at d 768, 16k tokens,
1/16 routed (1024 queries / FFN tokens, 2048 keys), against `colt5_attention.
ConditionalRoutedTransformerBlock` at the same dims (light 4 heads, window 128, heavy 8 heads;
light FFN 1024, heavy FFN 8192) in every mode it offers (fp32, Triton coordinate descent, flash
attention, bf16 autocast); a mode that fails is reported with its error.

What to expect (before running): the paper's FLOP formulas (Table 2), LongT5 12nd^2 + n^2 d/8
against CoLT5 7.25nd^2 + n^2 d/84 per layer, give 2.0x at n = 16k, d = 768 (1.7x at 4k, 2.9x at
64k); the routing itself (top-k, soft top-k iterations, gathers) is not in those formulas, so
expect less at 4k. Against Hugging Face's LongT5, which materialises the scores of every block,
more; against full attention the gap grows as n^2.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from frugalformers import build_model
from frugalformers.bench import (
    format_table,
    hardware,
    measure,
    plot_lines,
    profile_step,
    profiles_markdown,
    update_results,
    write_json,
)
from frugalformers.bench.report import add_output_args, output_dir
from frugalformers.bench.steps import add_compile_flags, bf16_autocast, compile_setting, compiled, step_fns

HERE = Path(__file__).resolve().parent


def flop_ratio(n: int, d: int = 768) -> float:
    """LongT5 over CoLT5 encoder FLOPs per layer, the paper's Table 2 formulas."""
    return (12 * n * d * d + n * n * d / 8) / (7.25 * n * d * d + n * n * d / 84)


def hf_encoder(kind: str, smoke: bool):
    import transformers

    shape = (
        dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, vocab_size=512)
        if smoke
        else dict(d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12, vocab_size=32128)
    )
    if kind == "longt5":
        cfg = transformers.LongT5Config(
            **shape,
            feed_forward_proj="gated-gelu",
            encoder_attention_type="transient-global",
            local_radius=15 if smoke else 127,
            global_block_size=16,
        )
        return transformers.LongT5EncoderModel(cfg)
    cfg = transformers.T5Config(**shape, feed_forward_proj="gated-gelu")
    cfg._attn_implementation = "sdpa"
    return transformers.T5EncoderModel(cfg)


def encoder_rows(seqs, device, autocast, warmup, repeats, smoke, modes, skip=(), compile=False):
    rows = []
    models = [
        ("CoLT5-Base (ours)", "colt5-tiny" if smoke else "colt5-base"),
        ("LongT5-TGlobal-Base (ours)", "longt5-tiny" if smoke else "longt5-base"),
        ("HF LongT5EncoderModel (tglobal)", "hf:longt5"),
        ("HF T5EncoderModel (full attention)", "hf:t5"),
    ]
    models = [(label, name) for label, name in models if not any(x in label for x in skip)]
    for n in seqs:
        base, hf = {}, {}
        ids = torch.randint(5, 500, (1, n), device=device)
        for label, name in models:
            torch.manual_seed(0)
            try:
                if name.startswith("hf:"):
                    model = hf_encoder(name[3:], smoke).to(device)
                else:
                    model = build_model(name, head="encoder", max_seq_len=max(n, 16384)).to(device)
                infer, train = step_fns(compiled(model, compile), ids, autocast)
            except torch.OutOfMemoryError:
                rows.append({"model": label, "seq": n, "mode": "-", "ms": "OOM"})
                continue
            for mode, fn in (("inference", infer), ("train", train)):
                if mode not in modes:
                    continue
                row = {"model": label, "seq": n, "mode": mode}
                try:
                    t = measure(fn, warmup=warmup, repeats=repeats, device=device)
                except torch.OutOfMemoryError:
                    row["ms"] = "OOM"
                    rows.append(row)
                    torch.cuda.empty_cache()
                    continue
                except Exception as e:  # noqa: BLE001 - a model that does not compile runs eager, labelled
                    if not compile:
                        row["ms"] = f"error {type(e).__name__}: {str(e).splitlines()[0][:60] if str(e) else ''}"
                        rows.append(row)
                        continue
                    print(f"{label}: torch.compile failed ({type(e).__name__}); timing it eager", flush=True)
                    row["mode"] = f"{mode} (eager: torch.compile fails)"
                    eager = dict(zip(("inference", "train"), step_fns(model, ids, autocast)))[mode]
                    t = measure(eager, warmup=warmup, repeats=repeats, device=device)
                mode = row["mode"].split(" ")[0]
                if label.startswith("LongT5-TGlobal-Base (ours)"):
                    base[mode] = t.median_ms
                if label.startswith("HF LongT5"):
                    hf[mode] = t.median_ms
                row.update({"ms": t.median_ms, "tokens/s": n / (t.median_ms / 1e3), "peak GiB": t.peak_mem_gib})
                rows.append(row)
                print(row, flush=True)
            del model, infer, train
            if device == "cuda":
                torch.cuda.empty_cache()
        for r in rows:
            mode = r["mode"].split(" ")[0]
            if r["seq"] == n and isinstance(r.get("ms"), float) and mode in base:
                r["LongT5 (ours) ms / this"] = base[mode] / r["ms"]
                r["FLOP ratio (Table 2)"] = flop_ratio(n) if r["model"].startswith("CoLT5") else None
            if r["seq"] == n and isinstance(r.get("ms"), float) and mode in hf:
                r["HF LongT5 ms / this"] = hf[mode] / r["ms"]
    return rows


def block_cases(n, device, smoke, compile=False):
    """One CoLT5 layer, ours and colt5-attention's block in each of its modes: ([error rows],
    [(label, inference fn)]); d 768, n tokens, n/16 routed. `compile`: every block through
    torch.compile (a mode that does not compile shows up as an error row)."""
    d = 64 if smoke else 768
    m = n // 16
    rows = []
    torch.manual_seed(0)
    ours = build_model("colt5-tiny" if smoke else "colt5-base", head="encoder", n_layers=1, max_seq_len=max(n, 16384))
    ours = ours.to(device).eval()
    ids = torch.randint(5, 500, (1, n), device=device)
    cases = [("ours, bf16 autocast", ours, ids, bf16_autocast(device))]
    try:
        from colt5_attention import ConditionalRoutedTransformerBlock
    except ImportError as e:
        rows.append({"block": "colt5-attention", "mode": "-", "ms": f"not installed: {e}"})
        ConditionalRoutedTransformerBlock = None
    if ConditionalRoutedTransformerBlock is not None:
        x = torch.randn(1, n, d, device=device)
        light_ff, heavy_ff = (64, 512) if smoke else (1024, 8192)
        for mode, triton, flash, amp in (
            ("fp32", False, False, False),
            ("fp32, flash attention", False, True, False),
            ("fp32, Triton coordinate descent", True, False, False),
            ("bf16 autocast", False, False, True),
            ("bf16 autocast, Triton + flash", True, True, True),
        ):
            if triton and device != "cuda":
                continue
            try:
                block = (
                    ConditionalRoutedTransformerBlock(
                        d,
                        num_heavy_attn_tokens_q=m,
                        num_heavy_attn_tokens_kv=2 * m,
                        num_heavy_ff_tokens=m,
                        light_dim_head=16 if smoke else 64,
                        light_heads=1 if smoke else 4,
                        light_window_size=16 if smoke else 128,
                        heavy_dim_head=16 if smoke else 64,
                        heavy_heads=3 if smoke else 8,
                        light_ff_mult=light_ff / d,
                        heavy_ff_mult=heavy_ff / d,
                        use_triton=triton,
                        use_flash_attn=flash,
                    )
                    .to(device)
                    .eval()
                )
            except Exception as e:  # noqa: BLE001 - report any construction failure
                rows.append({"block": "colt5-attention", "mode": mode, "ms": f"error {type(e).__name__}: {e}"[:90]})
                continue
            cases.append((f"colt5-attention, {mode}", block, x, bf16_autocast(device) if amp else None))
    fns = []
    for label, mod, inp, amp in cases:
        mod = compiled(mod, compile)
        label = label + (f", compiled ({compile})" if isinstance(compile, str) else ", compiled") if compile else label

        def fn(mod=mod, inp=inp, amp=amp):
            with torch.no_grad(), amp() if amp else torch.autocast(device, enabled=False):
                return mod(inp)

        fns.append((label, fn))
    return rows, fns


def block_rows(n, device, warmup, repeats, smoke, compile=False):
    """One CoLT5 layer, ours vs colt5-attention, inference; d 768, n tokens, n/16 routed."""
    rows, cases = block_cases(n, device, smoke, compile)
    for label, fn in cases:
        row = {"block": label.split(",")[0], "mode": label.split(", ", 1)[1]}
        try:
            t = measure(fn, warmup=warmup, repeats=repeats, device=device)
            row.update({"ms": t.median_ms, "tokens/s": n / (t.median_ms / 1e3), "peak GiB": t.peak_mem_gib})
        except Exception as e:  # noqa: BLE001 - the peer's failures are part of the result
            row["ms"] = f"error {type(e).__name__}: {str(e).splitlines()[0][:70] if str(e) else ''}"
        rows.append(row)
        print(row, flush=True)
    ok = [r for r in rows if isinstance(r.get("ms"), float)]
    if ok and ok[0]["block"] == "ours":
        peers = [r["ms"] for r in ok if r["block"] != "ours"]
        for r in ok:
            r["ours vs this"] = r["ms"] / ok[0]["ms"]
        if peers:
            ok[0]["vs fastest working peer"] = min(peers) / ok[0]["ms"]
    return rows


def profiles(n, device, autocast, smoke, compile=False):
    """Kernel time by category at n tokens: our CoLT5 layer and every working colt5-attention mode,
    then CoLT5-Base, our LongT5-TGlobal-Base and HF LongT5 encoder inference (HF eager: it does not
    compile)."""
    out = []
    _, cases = block_cases(n, device, smoke, compile)
    for label, fn in cases:
        try:
            out.append((f"one layer: {label}, {n} tokens", profile_step(fn, device)))
        except Exception as e:  # noqa: BLE001 - a peer mode that fails is left out of the profile
            print(f"{label}: {type(e).__name__}: {str(e)[:80]}", flush=True)
    ids = torch.randint(5, 500, (1, n), device=device)
    for label, name in (
        ("CoLT5-Base (ours)", "colt5-tiny" if smoke else "colt5-base"),
        ("LongT5-TGlobal-Base (ours)", "longt5-tiny" if smoke else "longt5-base"),
        ("HF LongT5EncoderModel (tglobal)", None),
    ):
        torch.manual_seed(0)
        model = hf_encoder("longt5", smoke) if name is None else build_model(name, head="encoder", max_seq_len=n)
        infer, _ = step_fns(compiled(model.to(device), compile and name is not None), ids, autocast)
        out.append((f"{label}, encoder inference, {n} tokens", profile_step(infer, device)))
        del model, infer
    return out


def decode_rows(n_in, n_out, device, smoke):
    """Encode n_in tokens, then greedily decode n_out (eager decode steps), batch 1."""
    from frugalformers.generate import generate

    rows = []
    for label, preset in (
        ("CoLT5-Base (ours)", "colt5-tiny" if smoke else "colt5-base"),
        ("LongT5-TGlobal-Base (ours)", "longt5-tiny" if smoke else "longt5-base"),
    ):
        torch.manual_seed(0)
        model = build_model(preset, max_seq_len=max(n_in, 16384)).to(device).eval()
        if device == "cuda":
            model = model.to(torch.bfloat16)
        prompt = [torch.randint(5, 500, (n_in,)).tolist()]
        ids = torch.tensor(prompt, device=device)

        def sync():
            if device == "cuda":
                torch.cuda.synchronize()

        times = {"encode": [], "total": []}
        for _ in range(3):
            sync()
            t0 = time.perf_counter()
            with torch.no_grad():
                model.encode(ids, torch.ones_like(ids))
            sync()
            t1 = time.perf_counter()
            generate(model, prompt, n_out, eos_id=None)
            sync()
            t2 = time.perf_counter()
            times["encode"].append((t1 - t0) * 1e3)
            times["total"].append((t2 - t1) * 1e3)
        enc, tot = statistics.median(times["encode"]), statistics.median(times["total"])
        rows.append({"model": label, "input": n_in, "output": n_out, "encode ms": enc, "encode + decode ms": tot,
                     "decode ms": tot - enc})  # fmt: skip
        print(rows[-1], flush=True)
        del model
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seq", type=int, nargs="+", default=[4096, 8192, 16384, 32768, 65536])
    p.add_argument("--modes", nargs="+", default=["inference", "train"])
    p.add_argument("--block-seq", type=int, default=16384)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--skip-decode", action="store_true")
    p.add_argument("--skip-models", nargs="*", default=[], help="encoder rows to leave out (label substrings)")
    p.add_argument("--profile", action="store_true", help="kernel time by category at --block-seq tokens")
    add_compile_flags(p, "torch.compile every encoder and block, ours and the peers'")
    add_output_args(p, HERE, "colt5")
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if args.smoke:
        args.seq, args.block_seq, args.repeats, args.warmup = [256], 256, 1, 0
    setting = compile_setting(p, args)  # batch 1 is launch-bound: --cuda-graphs removes the gaps
    compile, suffix, flags = setting.how, setting.suffix, setting.flags
    autocast = bf16_autocast(device)
    if args.profile:
        md = profiles_markdown(
            f"CoLT5: where the time goes{setting.title}",
            f"python benchmarks/colt5.py --profile --block-seq {args.block_seq}{flags}",
            profiles(args.block_seq, device, autocast, args.smoke, compile),
            "Batch 1, inference; ours and HF under bf16 autocast, colt5-attention in the mode each title names.",
        )
        print(md)
        if not args.smoke:
            update_results(args.results, "colt5-profile" + suffix, md)
        return 0
    enc = encoder_rows(
        args.seq, device, autocast, args.warmup, args.repeats, args.smoke, args.modes, args.skip_models, compile
    )
    blk = block_rows(args.block_seq, device, args.warmup, args.repeats, args.smoke, compile)
    dec = (
        []
        if args.skip_decode
        else decode_rows(args.block_seq if not args.smoke else 256, 128 if not args.smoke else 8, device, args.smoke)
    )
    tables = [format_table(enc), format_table(blk)] + ([format_table(dec)] if dec else [])
    for t in tables:
        print(t)
    hw = hardware()
    out = output_dir(args.out, args.smoke, HERE)
    tag = "colt5" + suffix
    write_json(out / f"{tag}.json", {"encoder": enc, "block": blk, "decode": dec}, hardware=hw)
    series = {}
    for r in enc:
        if r["mode"] == "inference" and isinstance(r.get("ms"), float):
            xs, ys = series.setdefault(r["model"], ([], []))
            xs.append(r["seq"])
            ys.append(r["tokens/s"])
    plot_lines(
        out / f"{tag}.png",
        series,
        "input tokens",
        "encoder inference tokens/s",
        f"Long-input encoders, batch 1, bf16{setting.title} (the paper's Figure 1 axis)",
        logx=True,
        logy=True,
    )
    if args.smoke:
        return 0
    cmd = (
        f"python benchmarks/colt5.py --seq {' '.join(map(str, args.seq))}"
        + f" --repeats {args.repeats} --warmup {args.warmup}"
        + flags
        + (" --skip-decode" if args.skip_decode else "")
        + (f" --skip-models {' '.join(shlex.quote(m) for m in args.skip_models)}" if args.skip_models else "")
    )
    how = "every encoder and block through torch.compile (static shapes), " if args.compile else ""
    title_how = setting.title
    md = (
        f"## CoLT5 vs LongT5 (transient-global) and the peers{title_how}\n\n"
        f"Hardware: {hw}  \nCommand: `{cmd}`  \n"
        f"Encoders: batch 1, bf16 autocast, {how}median of {args.repeats}; `LongT5 (ours) ms / this` > 1 means "
        f"faster than our LongT5-TGlobal-Base at the same length (`HF LongT5 ms / this`: than Hugging Face's); the "
        f"FLOP ratio is the paper's Table 2 (LongT5 / CoLT5).\n\n"
        f"{tables[0]}\n\nOne CoLT5 layer at {args.block_seq} tokens, inference:\n\n{tables[1]}\n"
        + f"\n![](results/{tag}.png)\n"
        + (
            f"\nEncode {args.block_seq} tokens, then decode 128 (greedy, eager decode steps, bf16 weights):"
            f"\n\n{tables[2]}\n"
            if dec
            else ""
        )
    )
    update_results(args.results, tag, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
