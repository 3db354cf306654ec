"""`frugal train` with bert-base on the packed corpus: tokens/s and MFU from the run's own log.

Pack the corpus first (on a machine with the prepared `corpus`), then run on the GPU:

    frugal data pack corpus --tokenizer base --out .pack/corpus-base
    python benchmarks/train_bert_base.py --data .pack/corpus-base

Each run is a real `frugal train` (MLM, seq 512, batch 64, bf16 autocast, fused AdamW, the 32k
corpus tokenizer); the table reports the median of the logged tokens/s and MFU after warm-up.
MFU counts the encoder's forward FLOPs plus the MLM head at its 15% share, times 3 for training.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from frugalformers.bench import format_table, hardware, update_results
from frugalformers.train.config import load_run_config
from frugalformers.train.logger import read_metrics
from frugalformers.train.run import pretrain

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=".pack/corpus-base")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--out", default="runs/bench-bert-base")
    p.add_argument("--compile", choices=["no", "yes", "both"], default="both")
    p.add_argument("--results", default=str(HERE / "RESULTS-bert.md"))
    args = p.parse_args(argv)
    rows = []
    for compiled in {"no": [False], "yes": [True], "both": [False, True]}[args.compile]:
        run = Path(args.out) / ("compiled" if compiled else "eager")
        cfg = load_run_config(
            "bert-base",
            None,
            [
                f"steps={args.steps}",
                f"out={run}",
                f"data.dataset={args.data}",
                "data.tokenizer=base",
                "data.seq_len=512",
                "data.batch_size=64",
                "optim.lr=1e-4",
                "optim.warmup_steps=50",
                f"eval_every={args.steps}",
                "eval_batches=10",
                f"save_every={args.steps}",
                "log_every=10",
                f"compile={str(compiled).lower()}",
            ],
        )
        result = pretrain(cfg, progress=False)
        recs = [r for r in read_metrics(run) if "tokens_per_s" in r]
        steady = recs[len(recs) // 3 :]  # skip warm-up / compilation
        rows.append(
            {
                "run": "frugal train bert-base" + (" (compile=true)" if compiled else ""),
                "steps": args.steps,
                "tokens/step": 64 * 512,
                "tokens/s (median)": statistics.median(r["tokens_per_s"] for r in steady),
                "MFU (median)": statistics.median(r["mfu"] for r in steady) if "mfu" in steady[0] else None,
                "final train loss": recs[-1]["loss"],
                "valid MLM acc": result.get("valid_mlm_accuracy"),
            }
        )
    table = format_table(rows)
    print(table)
    hw = hardware()
    print(hw)
    md = (
        f"## `frugal train` bert-base on the packed corpus\n\nHardware: {hw}  \n"
        f"Command: `python benchmarks/train_bert_base.py --data {args.data} --steps {args.steps}`  \n"
        f"MLM pretraining, seq 512, batch 64 (32,768 tokens/step), bf16 autocast, fused AdamW, 32k SentencePiece "
        f"vocabulary of the `corpus` dataset. tokens/s and MFU are the medians of the values `frugal train` "
        f"logged (every 10 steps) over the last two thirds of the run; MFU is against the 989 TFLOP/s datasheet "
        f"bf16 peak.\n\n{table}\n"
    )
    update_results(args.results, "train-bert-base", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
