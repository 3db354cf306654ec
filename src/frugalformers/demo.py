"""`frugal demo` (the README's first command): a small `frugal compare` on the CPU.

Tiny BERT, FNet and Sparse Mixer are pretrained with MLM on the same tokens of the `demo` data
(BBC news and movie reviews, PyPI only), then each is fine-tuned on the two demo tasks (movie-review
sentence sentiment, BBC topic) with two seeds, and the same models are fine-tuned without
pretraining with the same recipe, so the table shows what pretraining bought at this budget; the
training speed of each model is measured in the same run. The run folder is a comparison's
(`runs/demo`): a second `frugal demo` reads the finished cells back and prints the table again.
The settings are the ones measured fastest to learn on 2 CPU cores (benchmarks/QUALITY.md `demo`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from frugalformers.compare import run_compare
from frugalformers.compare.report import scratch_twin
from frugalformers.data.datasets import prepare
from frugalformers.plot import plot_runs

MODELS = ("bert-tiny", "fnet-tiny", "sparse-mixer-tiny")
SEQ = 64  # one length for pretraining and fine-tuning: Linear mixing (Sparse Mixer) needs a fixed one


def demo_recipe(pretrain_steps: int = 400, finetune_steps: int = 80, seeds: int = 2) -> dict:
    """The demo's comparison, as a `frugal compare` recipe."""
    return {
        "name": "demo",
        "description": (
            f"Tiny BERT, FNet and Sparse Mixer (2-4 layers of width 64) pretrained with MLM on the same "
            f"{pretrain_steps * 32 * SEQ:,} tokens of the demo data, fine-tuned on two tasks with and without "
            f"that pretraining ({finetune_steps} steps, {seeds} seeds), on this machine's CPU."
        ),
        "reference": "bert-tiny",
        "models": list(MODELS),
        "pretrain": {
            "steps": pretrain_steps,
            "eval_every": max(1, pretrain_steps // 8),
            "eval_batches": 4,
            "log_every": max(1, pretrain_steps // 20),
            "data": {"dataset": "demo", "tokenizer": "tiny", "batch_size": 32, "seq_len": SEQ},
            "optim": {"lr": 3.0e-3, "warmup": 0.1},
            "model": {"max_seq_len": SEQ},
        },
        "finetune": {
            "dataset": "demo",
            "tasks": ["sentiment", "topic"],
            "seeds": list(range(seeds)),
            "scratch": True,
            "epochs": 1.0,
            "min_steps": finetune_steps,
            "max_steps": finetune_steps,
            "run": {
                # pretraining grows the embedding tables ~5x, which slows fine-tuning by as much; scaled
                # back (the function unchanged), the pretrained models fine-tune at a fresh model's pace
                "rescale_embeddings": True,
                "eval_batches": 2,
                "data": {"batch_size": 32, "seq_len": SEQ},
                "optim": {"lr": 2.0e-3, "warmup": 0.1},
                "model": {"classifier_pooling": "mean"},
            },
        },
        "speed": {"repeats": 5, "warmup": 2},
    }


def run_demo(
    out: str = "runs/demo",
    pretrain_steps: int = 400,
    finetune_steps: int = 80,
    seeds: int = 2,
    workers: int = 2,
    log=print,
) -> int:
    t0 = time.time()
    prepare("demo", log=log)
    out_dir = Path(out)
    recipe = demo_recipe(pretrain_steps, finetune_steps, seeds)
    resume = (out_dir / "recipe.yaml").exists()
    run_compare(
        recipe, str(out_dir), resume=resume, workers=workers, log=lambda m: None if m.startswith("\n") else log(m)
    )
    png = plot_runs(
        [str(out_dir / "cells/pretrain" / m) for m in MODELS],
        str(out_dir / "pretrain_curves.png"),
        f"MLM pretraining on the demo data: {', '.join(MODELS)}",
        names=list(MODELS),
    )
    print("\n" + _table(out_dir))
    data = json.loads((out_dir / "compare.json").read_text())
    for line in (_why_pretraining_lost(data), _pretraining_ties(data)):
        if line:
            print("\n" + line)
    print(f"\nloss curves: {png}; speed and quality: {out_dir / 'compare.png'}; everything: {out_dir / 'compare.md'}")
    print(f"({time.time() - t0:.0f} s; CPU, float32)")
    return 0


def _table(out_dir: Path) -> str:
    """The demo's part of compare.md: the table and the line under it."""
    text = (out_dir / "compare.md").read_text()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| model |"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    return "\n".join(lines[start:end])


def _with_twins(data: dict) -> list[tuple[dict, dict]]:
    """(pretrained row, its row without pretraining) for every model of compare.json's `data` that has both."""
    rows = data["rows"]
    return [(r, twin) for r in rows if not r["scratch"] and (twin := scratch_twin(r, rows))]


def _why_pretraining_lost(data: dict) -> str | None:
    """One line naming the pretrained models that lost to their twins without pretraining, and why,
    as far as the run itself shows it (their MLM loss against the unigram model's)."""
    lost = [r for r, twin in _with_twins(data) if r["average"] < twin["average"]]
    if not lost:
        return None
    names = ", ".join(r["label"] for r in lost)
    unigram = (data.get("unigram") or {}).get("valid_loss")
    gap = max(unigram - r["pretrain_loss"] for r in lost) if unigram is not None else None
    if gap is not None and gap < 0.5:
        return (
            f"Pretraining lost for {names}: their held-out MLM loss is at most {gap:.2f} below the unigram "
            f"model's ({unigram:.2f}), so they have learned word frequencies and little context "
            "(benchmarks/QUALITY.md, demo)."
        )
    return f"Pretraining lost for {names} at this budget (benchmarks/QUALITY.md, demo)."


def _pretraining_ties(data: dict) -> str | None:
    """One line naming the pretrained models whose gain over their twins is smaller than the
    spread of their own scores over seeds (the mean over tasks of the standard deviation): a tie
    at this budget, not a win."""
    ties = []
    for r, twin in _with_twins(data):
        if r["average"] < twin["average"]:
            continue
        gain = 100 * (r["average"] - twin["average"])
        spread = 100 * sum(t["sd"] for t in r["tasks"].values()) / len(r["tasks"])
        if gain < spread:
            ties.append(f"{r['label']} +{gain:.1f} points against a spread of {spread:.1f}")
    if not ties:
        return None
    return (
        f"Pretraining's gain is within the spread over seeds for {'; '.join(ties)}: at this budget a tie, "
        "not a win (benchmarks/QUALITY.md, demo)."
    )


if __name__ == "__main__":
    sys.exit(run_demo())
