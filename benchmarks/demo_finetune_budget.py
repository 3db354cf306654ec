"""The demo's fine-tuning with more steps: is the demo's verdict about pretraining a budget effect?

Re-runs the fine-tuning cells of a finished `frugal demo` folder (the same pretrained checkpoints,
seeds and recipe; the models without pretraining too) with `--steps` fine-tuning steps (and
`--batch` examples a step), and prints per model the average test accuracy over the demo's tasks
with and without pretraining, mean over seeds, beside the gap. The demo itself fine-tunes 80 steps
of 32 to stay within its 5-minute budget.

    python benchmarks/demo_finetune_budget.py --steps 160 240 320
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from demo_rerun import demo_parser, finished_demo, rerun_finetuning


def main(argv=None) -> int:
    from frugalformers.compare.recipe import recipe_from_dict

    ap = demo_parser(__doc__, "runs/demo-finetune-budget")
    ap.add_argument("--steps", nargs="+", type=int, default=[240])
    ap.add_argument("--batch", type=int, help="fine-tuning batch size (default: the recipe's)")
    args = ap.parse_args(argv)
    folder = Path(args.folder)
    demo = finished_demo(folder)
    raw = demo.raw
    labels = args.models or [m.label for m in demo.models]
    scores: dict[tuple, list[float]] = {}
    for steps in args.steps:
        ft = {**raw["finetune"], "min_steps": steps, "max_steps": steps}
        if args.batch:
            ft["run"] = {**ft["run"], "data": {**ft["run"]["data"], "batch_size": args.batch}}
        recipe = recipe_from_dict({**raw, "finetune": ft}, str(folder / "recipe.yaml"))
        for a, accuracy in rerun_finetuning(recipe, folder, Path(args.out), labels, f"steps{steps}"):
            scores.setdefault((a["label"], a["scratch"], steps, a["task"]), []).append(accuracy)
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
