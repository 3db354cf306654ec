"""Linear probe of a comparison's pretrained encoders: did pretraining learn features the tasks use?

For every model pretrained in a `frugal compare` folder (runs/demo by default) and every task of
its recipe, the encoder is frozen, each row is encoded as the mean of its tokens' final hidden
states (the pooling the demo fine-tunes through), and an L2-regularised logistic regression
(L-BFGS, features standardised on the training split) is fitted on the training split and scored
on the test split. The same is done for the same architecture at its random initialisation (the
seed the scratch rows start from), and beside both the majority-class baseline. A pretrained probe
above the random one means pretraining put task information where a linear layer can read it,
whatever fine-tuning then makes of it. The mean row norm of the word embeddings, random and
pretrained, is printed beside (Adam moves a row by about the same amount whatever its size).

    python benchmarks/linear_probe.py                 # runs/demo (after `make demo`)
    python benchmarks/linear_probe.py runs/demo --tasks topic
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F


def encode(model, batches, split: str, chunk: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, d) mean-pooled final hidden states of `split`'s rows, and (N,) label indices."""
    feats, labels = [], []
    items = batches.split_items(split)
    with torch.no_grad():
        for i in range(0, len(items), chunk):
            b = batches.make(items[i : i + chunk])
            out = model.encoder(b["input_ids"], b["token_type_ids"], b["attention_mask"])
            keep = b["attention_mask"][:, :, None].float()  # (B, T, 1)
            feats.append((out.hidden.float() * keep).sum(1) / keep.sum(1).clamp(min=1))  # (B, d)
            labels.append(b["labels"])
    return torch.cat(feats), torch.cat(labels)


def probe_accuracy(train: tuple, test: tuple, n_labels: int, l2: float = 1e-3) -> float:
    """Test accuracy of a logistic regression fitted on standardised training features."""
    (x, y), (xt, yt) = train, test
    mu, sd = x.mean(0), x.std(0) + 1e-6
    x, xt = (x - mu) / sd, (xt - mu) / sd
    w = torch.zeros(x.shape[1], n_labels, requires_grad=True)
    bias = torch.zeros(n_labels, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + bias, y) + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return ((xt @ w + bias).argmax(-1) == yt).float().mean().item()


def probe_folder(folder: Path, tasks: list[str] | None = None, log=print) -> list[dict]:
    from frugalformers.api import build_model
    from frugalformers.checkpoint import load
    from frugalformers.compare.cells import cell_dir, majority_baseline, pretrain_config
    from frugalformers.compare.recipe import load_recipe
    from frugalformers.data.tasks import load_task
    from frugalformers.train.batches import TaskBatches, load_tokenizer
    from frugalformers.train.checkpointing import list_checkpoints

    recipe = load_recipe(str(folder / "recipe.yaml"))
    ft = recipe.finetune
    dataset, tasks = ft.dataset, tasks or list(ft.tasks)
    rows = []
    for m in recipe.models:
        ckpts = list_checkpoints(cell_dir(folder, f"pretrain/{m.label}"))
        if not ckpts:
            log(f"{m.label}: not pretrained in {folder} (run the comparison first); skipped")
            continue
        cfg = pretrain_config(recipe, m.label)
        pretrained = load(ckpts[-1]).eval()
        torch.manual_seed(ft.seeds[0])  # the initialisation the first seed's scratch row starts from
        random_init = build_model(pretrained.config).eval()
        tok = load_tokenizer(cfg.data.dataset, cfg.data.tokenizer)
        for task in tasks:
            split_rows = {s: load_task(dataset, task, s) for s in ("train", "test")}
            labels = sorted({r["label"] for r in split_rows["train"]})
            batches = TaskBatches(pretrained.config, split_rows, labels, tok, cfg.data.seq_len, 8, 32, 0)
            row = {"model": m.label, "task": task, "majority": majority_baseline(dataset, task)["score"]}
            for name, model in (("random init", random_init), ("pretrained", pretrained)):  # mean row norm
                row[f"embedding norm, {name}"] = model.encoder.embeddings.word.weight.norm(dim=1).mean().item()
            for name, model in (("random init", random_init), ("pretrained", pretrained)):
                train, test = encode(model, batches, "train"), encode(model, batches, "test")
                row[name] = probe_accuracy(train, test, len(labels))
            log(f"{m.label} {task}: random {row['random init']:.3f}, pretrained {row['pretrained']:.3f}")
            rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", nargs="?", default="runs/demo", help="a `frugal compare` folder")
    ap.add_argument("--tasks", nargs="+", help="default: the recipe's fine-tuning tasks")
    args = ap.parse_args(argv)
    folder = Path(args.folder)
    if not (folder / "recipe.yaml").exists():
        sys.exit(f"{folder}: no recipe.yaml here; run `frugal demo` or `frugal compare RECIPE --out {folder}` first")
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    rows = probe_folder(folder, args.tasks)
    print(
        "\n| model | task | majority | probe, random init | probe, pretrained | word-embedding row norm, random init"
        " / pretrained |\n|---|---|---|---|---|---|"
    )
    for r in rows:
        norms = f"{r['embedding norm, random init']:.3f} / {r['embedding norm, pretrained']:.3f}"
        print(
            f"| {r['model']} | {r['task']} | {r['majority']:.3f} | {r['random init']:.3f} | {r['pretrained']:.3f} "
            f"| {norms} |"
        )
    (folder / "linear_probe.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
