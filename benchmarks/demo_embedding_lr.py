"""The demo's fine-tuning with the embeddings' learning rate scaled: is fine-tuning embedding-bound?

Re-runs the fine-tuning cells of a finished `frugal demo` folder (the same pretrained checkpoints,
seeds, steps and recipe) with the learning rate of the embedding tables (word, position, token
type and their LayerNorm) multiplied by each FACTOR, every other parameter at the recipe's rate,
and prints the mean test accuracy per model and task beside the demo's own (factor 1). An
experiment, not a library option: it patches the optimizer the trainer builds.

    python benchmarks/demo_embedding_lr.py --models bert-tiny --factors 10 30
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from demo_rerun import demo_parser, finished_demo, rerun_finetuning


def scaled_embedding_optimizer(make_optimizer, factor: float):
    """`make_optimizer`, with the embedding parameters moved to a group of their own at lr x factor."""

    def make(model, cfg, device, fused=True):
        opt = make_optimizer(model, cfg, device, fused)
        emb = [p for name, p in model.named_parameters() if ".embeddings." in f".{name}" and p.requires_grad]
        ids = {id(p) for p in emb}
        for group in opt.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in ids]
        opt.add_param_group({"params": emb, "weight_decay": 0.0, "lr": cfg.optim.lr * factor})
        return opt

    return make


def main(argv=None) -> int:
    import frugalformers.train.trainer as trainer

    ap = demo_parser(__doc__, "runs/demo-embedding-lr")
    ap.add_argument("--factors", nargs="+", type=float, default=[10.0])
    args = ap.parse_args(argv)
    folder = Path(args.folder)
    recipe = finished_demo(folder)
    labels = args.models or [m.label for m in recipe.models]
    original = trainer.make_optimizer
    scores: dict[tuple, list[float]] = {}
    for factor in args.factors:
        trainer.make_optimizer = scaled_embedding_optimizer(original, factor)
        for a, accuracy in rerun_finetuning(recipe, folder, Path(args.out), labels, f"x{factor:g}"):
            key = (a["label"] + (", no pretraining" if a["scratch"] else ""), a["task"], factor)
            scores.setdefault(key, []).append(accuracy)
    trainer.make_optimizer = original
    rows = [{"model": m, "task": t, "factor": f, "scores": s} for (m, t, f), s in sorted(scores.items())]
    (Path(args.out) / "scores.json").write_text(json.dumps(rows, indent=1))
    print("\n| model | task | embedding lr x | test accuracy (mean ± sd over seeds) |\n|---|---|---|---|")
    for (model, task, factor), s in sorted(scores.items()):
        sd = statistics.stdev(s) if len(s) > 1 else 0.0
        print(f"| {model} | {task} | {factor:g} | {statistics.mean(s):.3f} ± {sd:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
