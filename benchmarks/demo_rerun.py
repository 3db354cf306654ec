"""Shared by the demo experiments (demo_embedding_lr.py, demo_finetune_budget.py): the arguments
that name a finished `frugal demo` folder, and re-running its fine-tuning cells (the same
pretrained checkpoints and seeds) under a changed recipe or optimizer."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import torch


def demo_parser(doc: str, out: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--folder", default="runs/demo", help="a finished `frugal demo` folder")
    ap.add_argument("--out", default=out, help="where the re-run cells go")
    ap.add_argument("--models", nargs="+", help="labels (default: the recipe's)")
    return ap


def finished_demo(folder: Path):
    """The demo folder's recipe; exits with the command that makes one when it is not there."""
    from frugalformers.compare.recipe import load_recipe

    if not (folder / "recipe.yaml").exists():
        sys.exit(f"{folder}: no recipe.yaml here; run `frugal demo --out {folder}` first")
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    return load_recipe(str(folder / "recipe.yaml"))


def rerun_finetuning(recipe, folder: Path, out: Path, labels: list[str], tag: str) -> Iterator[tuple[dict, float]]:
    """Fine-tune every fine-tuning cell of `recipe` whose model is in `labels` from the demo
    folder's checkpoints into out/TAG/CELL; yields (the cell's args, test accuracy)."""
    from frugalformers.compare.cells import finetune_config
    from frugalformers.compare.plan import plan
    from frugalformers.train.run import finetune

    for cell in plan(recipe):
        if cell.kind != "finetune" or cell.args["label"] not in labels:
            continue
        where = out / tag / cell.key
        if where.exists():
            sys.exit(f"{where} exists: remove {out} or choose another --out")
        result = finetune(finetune_config(recipe, cell, folder, where), log=lambda *_: None, progress=False)
        print(f"{tag} {cell.key}: {result['test']['accuracy']:.3f}", flush=True)
        yield cell.args, result["test"]["accuracy"]
