"""The demo's comparison with its pretraining changed: does a pretraining that learns more MLM make
the fine-tuned model better at the demo's budget?

Each variant is `frugal demo`'s recipe (demo.demo_recipe) with KEY=VALUE overrides, run as its own
`frugal compare` folder under --out (timings off); the table gives each variant's held-out MLM
loss beside the unigram model's on the same batches, and the fine-tuned accuracy of the pretrained
model beside the same model without pretraining (the same seeds and fine-tuning recipe in every
variant, so the no-pretraining rows are the demo's own).

    python benchmarks/demo_pretrain_variants.py --models bert-tiny \\
        --variant demo --variant lr1e-3 pretrain.optim.lr=1e-3 \\
        --variant batch8 pretrain.data.batch_size=8 pretrain.steps=1600 pretrain.eval_batches=16
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from omegaconf import OmegaConf

from frugalformers.compare import run_compare
from frugalformers.compare.report import scratch_twin
from frugalformers.demo import MODELS, demo_recipe


def variant_recipe(name: str, overrides: list[str], models: list[str]) -> dict:
    """The demo's recipe with `overrides` (dotted KEY=VALUE, read as `frugal train` reads its
    overrides) applied."""
    recipe = demo_recipe()
    recipe["name"] = f"demo-{name}"
    recipe["models"], recipe["reference"] = models, models[0]
    recipe["speed"] = {"kind": "none"}
    for item in overrides:
        if "=" not in item:
            raise SystemExit(f"--variant {name}: {item!r} is not KEY=VALUE (e.g. pretrain.optim.lr=1e-3)")
    merged = OmegaConf.merge(OmegaConf.create(recipe), OmegaConf.from_dotlist(overrides))
    return OmegaConf.to_container(merged)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variant", nargs="+", action="append", required=True, metavar="NAME [KEY=VALUE ...]")
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--out", default="runs/demo-variants")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    rows = []
    for name, *overrides in args.variant:
        out = Path(args.out) / name
        recipe = variant_recipe(name, overrides, args.models)
        run_compare(recipe, str(out), resume=(out / "recipe.yaml").exists(), workers=args.workers, log=lambda m: None)
        data = json.loads((out / "compare.json").read_text())
        by_label = {r["label"]: r for r in data["rows"]}
        unigram = (data.get("unigram") or {}).get("valid_loss")
        for model in args.models:
            row = by_label[model]
            twin = scratch_twin(row, data["rows"])
            rows.append(
                f"| {name} | {model} | {row['pretrain_loss']:.2f} (unigram {unigram:.2f}) | "
                f"{row['average']:.3f} | {twin['average']:.3f} | {100 * (row['average'] - twin['average']):+.1f} |"
            )
        print(f"{name}: {' '.join(overrides) or 'the demo recipe'} -> {out}", flush=True)
    print("\n| variant | model | held-out MLM loss | average, pretrained | average, no pretraining | gap (points) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
