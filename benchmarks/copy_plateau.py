"""Does our T5 learn like Hugging Face's, and how long is a copy task's plateau? The marked-token task:
random token ids with one marker at a random position; the target is the token after the marker.
The encoder has only to tag the token after the marker (relative position -1) and the decoder to read
it through cross-attention, the simplest piece of the `longdoc` retrieval task (find a phrase, read
the word after it).

Each seed builds `t5-tiny` (or `--preset`) without dropout, its Hugging Face twin with the same
weights (`convert.hf.to_hf_model`), and trains both with AdamW on the same batches; the table gives
the first step whose held-out accuracy on the answer reaches `--threshold`, and the largest
difference between the two training losses over the first `--gap-steps` (at the jump itself
rounding differences grow, so the two models jump within an evaluation or so of each other). A
model that stays at ~log(vocab) and then jumps is on a plateau, not broken: a fine-tuning budget
that stops before the jump measures nothing.

    python benchmarks/copy_plateau.py --seeds 0 1 2 --steps 3000 --out benchmarks/quality/copy-plateau
    python benchmarks/copy_plateau.py --seeds 0 --steps 4 --eval-every 2   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import torch

from frugalformers import build_model
from frugalformers.convert.hf import to_hf_model

MARKER, EOS, FIRST_ID = 3, 1, 10  # ids below FIRST_ID (pad, eos, marker, ...) never appear as content


def marked_batch(gen: torch.Generator, batch: int, seq_len: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids (B, T), labels (B, 2)): random content ids, a marker at a position in [2, T-2),
    labels = [the id after the marker, EOS]."""
    x = torch.randint(FIRST_ID, vocab, (batch, seq_len), generator=gen)  # (B, T)
    at = torch.randint(2, seq_len - 2, (batch,), generator=gen)  # (B,)
    rows = torch.arange(batch)
    x[rows, at] = MARKER
    answer = x[rows, at + 1]  # (B,)
    return x, torch.stack([answer, torch.full_like(answer, EOS)], 1)  # (B, 2)


def answer_accuracy(model, x: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of rows whose first decoded position (teacher-forced) predicts the answer id."""
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=x, attention_mask=torch.ones_like(x), labels=labels).logits  # (B, 2, V)
    model.train()
    return (logits[:, 0].argmax(-1) == labels[:, 0]).float().mean().item()


def train_pair(args, seed: int) -> dict:
    """Our model and its Hugging Face twin, trained on the same batches; their curves."""
    torch.manual_seed(seed)
    # tied head: transformers 5 ties T5's lm_head to the shared embedding whatever the config says
    ours = build_model(args.preset, vocab_size=args.vocab, dropout=0.0, attention_dropout=0.0, tie_word_embeddings=True)
    hf = to_hf_model(ours)
    models = {"frugalformers": ours, "transformers": hf}
    for m in models.values():
        m.train()
    opts = {k: torch.optim.AdamW(m.parameters(), lr=args.lr) for k, m in models.items()}
    gen = torch.Generator().manual_seed(seed)
    held = marked_batch(torch.Generator().manual_seed(10_000 + seed), 512, args.seq_len, args.vocab)
    curves = {k: {"loss": {}, "accuracy": {}} for k in models}
    gaps = []  # |our loss - theirs| at every step
    for step in range(1, args.steps + 1):
        x, labels = marked_batch(gen, args.batch, args.seq_len, args.vocab)
        losses = {}
        for k, m in models.items():
            loss = m(input_ids=x, attention_mask=torch.ones_like(x), labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opts[k].step()
            opts[k].zero_grad(set_to_none=True)
            losses[k] = loss.item()
        gaps.append(abs(losses["frugalformers"] - losses["transformers"]))
        if step % args.eval_every == 0:
            for k, m in models.items():
                curves[k]["loss"][step] = losses[k]
                curves[k]["accuracy"][step] = answer_accuracy(m, *held)
            print(
                f"seed {seed} step {step}: "
                + ", ".join(f"{k} loss {losses[k]:.3f} acc {curves[k]['accuracy'][step]:.3f}" for k in models),
                flush=True,
            )
    learned = {k: next((s for s, a in c["accuracy"].items() if a >= args.threshold), None) for k, c in curves.items()}
    early = gaps[: args.gap_steps]
    return {"seed": seed, "learned_at": learned, "max_loss_gap": max(early), "loss_gaps": gaps, "curves": curves}


def table(args, runs: list[dict]) -> str:
    def at(v):
        return f"{v:,}" if v is not None else f"not by {args.steps:,}"

    lines = [
        f"| seed | frugalformers: accuracy >= {args.threshold} at step | transformers: at step | "
        f"largest training-loss difference, first {args.gap_steps:,} steps |",
        "|---|---|---|---|",
    ]
    for r in runs:
        la = r["learned_at"]
        ours, theirs = at(la["frugalformers"]), at(la["transformers"])
        lines.append(f"| {r['seed']} | {ours} | {theirs} | {r['max_loss_gap']:.3g} |")
    for k in ("frugalformers", "transformers"):
        steps = [r["learned_at"][k] for r in runs if r["learned_at"][k] is not None]
        if len(steps) == len(runs) and len(steps) > 1:
            lines.append(f"\n{k}: {statistics.mean(steps):,.0f} ± {statistics.stdev(steps):,.0f} steps")
    lines.append(f"\nuniform answer loss: log({args.vocab - FIRST_ID}) = {math.log(args.vocab - FIRST_ID):.2f} nats")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="t5-tiny")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--vocab", type=int, default=200)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--gap-steps", type=int, default=500, help="steps over which the table's loss difference is taken")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", help="folder for curves.json and table.md")
    args = ap.parse_args(argv)
    if args.seq_len < 5 or args.vocab <= FIRST_ID + 1:
        raise SystemExit(f"--seq-len must be >= 5 and --vocab > {FIRST_ID + 1} (got {args.seq_len}, {args.vocab})")
    torch.set_num_threads(args.threads)
    runs = [train_pair(args, s) for s in args.seeds]
    text = table(args, runs)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "curves.json").write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
        (out / "table.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
