"""The untied LM head's init of T5.1.1-style models, side by side: std 1.0 (Hugging Face's
`_init_weights`, what frugalformers used until 2026-12-07) against d_model^-0.5 (T5X's
`logits_dense`, variance_scaling(1.0, "fan_in"), what it uses now).

Both variants pretrain the same model on the same UL2 batches of `corpus` with the same seed, and the
table gives the held-out UL2 loss before training and at each evaluation, beside the unigram model's.
With std 1.0 the untrained logits have a standard deviation of ~sqrt(d_model), so the first loss is
tens of nats instead of ~log(vocab), and AdamW spends its first steps shrinking the head.

    python benchmarks/t5_head_init.py --out benchmarks/quality/t5-head-init
    python benchmarks/t5_head_init.py --steps 4 --eval-every 2 --d-model 64   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from torch import nn

from frugalformers.compare.cells import unigram_baseline
from frugalformers.models import t5
from frugalformers.train.config import load_run_config
from frugalformers.train.run import pretrain

VARIANTS = {"hf-std-1.0": 1.0, "t5x-fan-in": None}  # None: the library's init (d_model^-0.5)


class _HeadInit:
    """Within the block, T5ForConditionalGeneration's untied head is re-drawn with std `std`."""

    def __init__(self, std: float | None):
        self.std, self.real = std, t5.T5ForConditionalGeneration.__init__

    def __enter__(self):
        std, real = self.std, self.real
        if std is None:
            return self

        def init(model, config):
            real(model, config)
            if model.lm_head is not None:
                nn.init.normal_(model.lm_head.weight, std=std)

        t5.T5ForConditionalGeneration.__init__ = init
        return self

    def __exit__(self, *exc):
        t5.T5ForConditionalGeneration.__init__ = self.real


def run_config(name: str, args, out: Path):
    """The variant's pretraining RunConfig (UL2 on --dataset, the model narrowed to --d-model)."""
    overrides = [
        "objective=ul2",
        f"steps={args.steps}",
        f"eval_every={args.eval_every}",
        f"eval_batches={args.eval_batches}",
        "eval_at_start=true",
        "save_every=0",
        "save_final=false",
        "log_every=10",
        f"seed={args.seed}",
        f"out={out / name}",
        f"data.dataset={args.dataset}",
        f"data.tokenizer={args.tokenizer}",
        f"data.batch_size={args.batch}",
        f"data.seq_len={args.seq_len}",
        f"data.target_len={args.seq_len // 2}",
        f"optim.lr={args.lr}",
        "optim.warmup=0.05",
        "optim.schedule=cosine",
        f"model.d_model={args.d_model}",
        f"model.n_heads={args.d_model // 64 or 1}",
        f"model.head_dim={min(64, args.d_model)}",
        f"model.d_ff={2 * args.d_model}",
    ]
    return load_run_config(args.preset, None, overrides)


def run_variant(name: str, cfg, out: Path) -> dict:
    """{step: held-out loss} of one head init."""
    with _HeadInit(VARIANTS[name]):
        pretrain(cfg, log=lambda *a: None, progress=False, overwrite=True)
    records = [json.loads(x) for x in (out / name / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["valid_loss"] for r in records if "valid_loss" in r}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="t5-tiny", help="a T5.1.1-style preset (untied head)")
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--dataset", default="corpus", help="a prepared dataset with pretraining shards")
    ap.add_argument("--tokenizer", default="tiny")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-batches", type=int, default=10)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/t5-head-init")
    args = ap.parse_args()
    out = Path(args.out)
    torch.set_num_threads(args.threads)
    curves = {name: run_variant(name, run_config(name, args, out), out) for name in VARIANTS}
    steps = sorted(set().union(*curves.values()))
    unigram = unigram_baseline(run_config("unigram", args, out))["valid_loss"]
    data = f"{args.dataset}/{args.tokenizer}"
    lines = [
        f"# T5 LM-head init: held-out UL2 loss, {args.preset} at d_model {args.d_model} on {data}",
        "",
        "| head init | " + " | ".join(f"step {s}" for s in steps) + " |",
        "|---|" + "---|" * len(steps),
    ]
    for name, curve in curves.items():
        lines.append(f"| {name} | " + " | ".join(f"{curve.get(s, math.nan):.2f}" for s in steps) + " |")
    lines.append(f"| unigram | {unigram:.2f} |" + " |" * (len(steps) - 1))
    cmd = "python benchmarks/t5_head_init.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "threads"
    )
    setup = f"{args.steps} steps of {args.batch} x {args.seq_len}, lr {args.lr}, seed {args.seed}"
    lines += ["", f"{setup}. Command: `{cmd}`"]
    text = "\n".join(lines) + "\n"
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(text)
    (out / "curves.json").write_text(json.dumps(curves, indent=1))


if __name__ == "__main__":
    main()
