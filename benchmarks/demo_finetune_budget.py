"""The demo's fine-tuning with more steps: is the demo's verdict about pretraining a budget effect?

Re-runs the fine-tuning cells of a finished `frugal demo` folder (the same pretrained checkpoints,
seeds and recipe; the models without pretraining too) with `--steps` fine-tuning steps (and
`--batch` examples a step), and prints per model the average test accuracy over the demo's tasks
with and without pretraining, mean over seeds, beside the gap. The demo itself fine-tunes 80 steps
of 32 to stay within its 5-minute budget.

    python benchmarks/demo_finetune_budget.py --steps 160 240 320
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch


def main(argv=None) -> int:
    from frugalformers.compare.cells import finetune_config
    from frugalformers.compare.plan import plan
    from frugalformers.compare.recipe import load_recipe, recipe_from_dict
    from frugalformers.train.run import finetune

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder", default="runs/demo", help="a finished `frugal demo` folder")
    ap.add_argument("--out", default="runs/demo-finetune-budget", help="where the re-run cells go")
    ap.add_argument("--models", nargs="+", help="labels (default: the recipe's)")
    ap.add_argument("--steps", nargs="+", type=int, default=[240])
    ap.add_argument("--batch", type=int, help="fine-tuning batch size (default: the recipe's)")
    args = ap.parse_args(argv)
    folder = Path(args.folder)
    if not (folder / "recipe.yaml").exists():
        sys.exit(f"{folder}: no recipe.yaml here; run `frugal demo --out {folder}` first")
    raw = load_recipe(str(folder / "recipe.yaml")).raw
    labels = args.models or list(raw["models"])
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    scores: dict[tuple, list[float]] = {}
    for steps in args.steps:
        ft = {**raw["finetune"], "min_steps": steps, "max_steps": steps}
        if args.batch:
            ft["run"] = {**ft["run"], "data": {**ft["run"]["data"], "batch_size": args.batch}}
        recipe = recipe_from_dict({**raw, "finetune": ft}, str(folder / "recipe.yaml"))
        for cell in plan(recipe):
            a = cell.args
            if cell.kind != "finetune" or a["label"] not in labels:
                continue
            out = Path(args.out) / f"steps{steps}" / cell.key
            if out.exists():
                sys.exit(f"{out} exists: remove {args.out} or choose another --out")
            result = finetune(finetune_config(recipe, cell, folder, out), log=lambda *_: None, progress=False)
            key = (a["label"], a["scratch"], steps, a["task"])
            scores.setdefault(key, []).append(result["test"]["accuracy"])
            print(f"{steps} steps {cell.key}: {result['test']['accuracy']:.3f}", flush=True)
    rows = [
        {"model": m, "scratch": s, "steps": n, "task": t, "scores": v} for (m, s, n, t), v in sorted(scores.items())
    ]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "scores.json").write_text(json.dumps(rows, indent=1))
    batch = args.batch or raw["finetune"]["run"]["data"]["batch_size"]
    print(f"\n| model | fine-tuning steps (batch {batch}) | pretrained: average | no pretraining | gap (points) |")
    print("|---|---|---|---|---|")
    for label in labels:
        for steps in args.steps:
            avg = {}
            for scratch in (False, True):
                means = [
                    statistics.mean(v) for (m, s, n, _), v in scores.items() if (m, s, n) == (label, scratch, steps)
                ]
                avg[scratch] = statistics.mean(means) if means else float("nan")
            gap = 100 * (avg[False] - avg[True])
            print(f"| {label} | {steps} | {avg[False]:.3f} | {avg[True]:.3f} | {gap:+.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
