"""Do word experts memorise? MoWE's mechanism on a CPU, without pretraining.

MoWE's claim (dos Santos et al. 2023) is that a large bank of small experts, each reached only by
its words, holds knowledge a dense model of the same FLOPs per token cannot. The GPU runs of
`recipes/mowe-small*.yaml` test it end to end (facts in pretraining, held-out questions) and so far
no model there learned the facts. This probe tests the mechanism alone: each model is fine-tuned
from scratch on the `knowledge` QA training pairs for many epochs (MoWE's experts trained, not
frozen: here they must learn) and scored by exact match on those same training questions (what it
memorised) and on the held-out test questions (subjects it never saw: there the prior, each
relation's most common answer, is all one can reach). Both columns sit beside that prior.

    python benchmarks/mowe_memorization.py --steps 2000 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from longdoc_probe import finetune_side_by_side

from frugalformers.compare.cells import most_common_answers
from frugalformers.data.tasks import load_task, score


def relation_prior(train: list[dict], rows: list[dict]) -> float:
    """Exact match of answering every row with its relation's most common training answer."""
    return score("em_f1", most_common_answers(train, rows, "relation"), [r["label"] for r in rows])["em"]


def parameters(preset: str) -> int:
    from frugalformers.api import build_model, count_parameters

    return count_parameters(build_model(preset))


def _scores(run: Path, dataset: str) -> tuple[float, float]:
    """(EM on the training questions, EM on the test questions) of a fine-tuned run."""
    memorised = run / "train_metrics.json"
    if not memorised.exists():
        cmd = [sys.executable, "-m", "frugalformers.cli", "eval", str(run), "--task", "qa", "--dataset", dataset,
               "--split", "train"]  # fmt: skip
        memorised.write_text(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return json.loads(memorised.read_text())["em"], json.loads((run / "test_metrics.json").read_text())["em"]


def _mean_sd(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.3f}" + (f" ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["t5-tiny", "switch-tiny", "mowe-tiny"])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--tokenizer", default="corpus/tiny")
    ap.add_argument("--dataset", default="knowledge")
    ap.add_argument("--out", default="runs/mowe-memorization")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = [f"data.dataset={args.dataset}", "data.task=qa", f"data.tokenizer={args.tokenizer}", "data.seq_len=32",
              "data.target_len=12", f"data.batch_size={args.batch}", f"steps={args.steps}", "log_every=100",
              f"eval_every={args.steps // 4}", "eval_batches=10", f"optim.lr={args.lr}"]  # fmt: skip
    runs = {f"{p}-seed{s}": (p, s) for p in args.presets for s in args.seeds}
    finetune_side_by_side(out, {name: ["--preset", p, f"seed={s}", *common] for name, (p, s) in runs.items()})
    train, test = load_task(args.dataset, "qa", "train"), load_task(args.dataset, "qa", "test")
    print("| model | parameters | training questions EM (memorised) | test questions EM (unseen subjects) |")
    print("|---|---|---|---|")
    for preset in args.presets:
        scores = [_scores(out / f"{preset}-seed{s}", args.dataset) for s in args.seeds]
        cells = [_mean_sd([sc[i] for sc in scores]) for i in (0, 1)]
        print(f"| {preset} | {parameters(preset) / 1e6:.2f}M | {cells[0]} | {cells[1]} |")
    print(f"| each relation's most common answer | | {relation_prior(train, train):.3f} | "
          f"{relation_prior(train, test):.3f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
