"""Can a small model learn the `longdoc` tasks at all? A CPU probe, from scratch, below the lengths
of `recipes/colt5-*.yaml`.

LongT5-small stayed at chance on retrieval and bible_match at 4k tokens after UL2 pretraining and
600 fine-tuning steps (QUALITY.md, colt5 Runs 1-2). This probe asks the question one step down:
fine-tuned from scratch on a CPU, does a tiny model learn either task, and does dense attention
(`t5-tiny`) learn what LongT5's transient-global or CoLT5's routed attention do not?

- `--retrieval-chars N`: the retrieval rule of `longdoc` (six words of an excerpt -> the word that
  follows them) on excerpts of N characters (~N/4 tokens) of the same documents and splits
  (train from the first 80% of each document, validation the next 10%, test the last 10%), written
  as JSONL and fine-tuned through `data.file` with `data.metric=em_f1`;
- `--task T`: a prepared `longdoc` task as it is (e.g. bible_match_1024).

Each preset runs `frugal finetune` in its own process (one thread each, side by side) and the
table gives the test score beside the prior: the most common training answer's score on the test
rows (SQuAD's normalisation counts "the" right for "a", "an" and "the"); and the teacher-forced
loss of the gold answers behind their own document and behind another test row's, the question
kept (train/answer_loss.py): the difference is what the model reads from the document.

    python benchmarks/longdoc_probe.py --retrieval-chars 1024 --seq-len 320 --steps 800
    python benchmarks/longdoc_probe.py --task bible_match_1024 --presets longt5-tiny colt5-tiny \\
        --seq-len 1280 --batch 16 --target-len 4 --steps 500 --eval-every 250
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

from frugalformers.compare.cells import most_common_answers
from frugalformers.data.store import dataset_dir, read_jsonl
from frugalformers.data.tasks import load_task, score, task_info

SPLITS = (("train", (0.0, 0.8)), ("valid", (0.8, 0.9)), ("test", (0.9, 1.0)))


def retrieval_files(
    folder: Path, n_chars: int, n_train: int, n_held: int = 400, dataset: str = "longdoc"
) -> dict[str, Path]:
    """train / valid / test JSONL of retrieval rows on `n_chars`-character excerpts of the longdoc
    `dataset`'s documents (rows of at least 30 words; the answer is a word at index >= 10)."""
    folder_of = Path(dataset) if Path(dataset).is_dir() else dataset_dir(dataset)
    docs = [d["text"] for d in read_jsonl(folder_of / "long/docs.jsonl")]
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(n_chars)
    paths = {}
    for split, (lo, hi) in SPLITS:
        paths[split] = folder / f"retrieval{n_chars}_{split}.jsonl"
        rows = []
        while len(rows) < (n_train if split == "train" else n_held):
            text = docs[rng.randrange(len(docs))]
            a, b = int(lo * len(text)), int(hi * len(text)) - n_chars
            start = rng.randint(a, max(a, b))
            words = text[start : start + n_chars].split()
            if len(words) < 30:
                continue
            k = rng.randrange(10, len(words) - 1)
            question = " ".join(words[k - 6 : k])
            rows.append({"text": f'Which word follows "{question}"?', "text_b": " ".join(words), "label": words[k]})
        paths[split].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return paths


def finetune_side_by_side(out: Path, runs: dict[str, list[str]]) -> None:
    """`frugal finetune ARGS out=OUT/NAME` for every NAME: ARGS of `runs`, one process (and thread)
    each, all at once; a run with test_metrics.json is not redone, one cut off resumes from its last
    checkpoint (or starts again if it wrote none)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    jobs = {}
    for name, run_args in runs.items():
        run = out / name
        if (run / "test_metrics.json").exists():
            continue
        again = ["--resume"] if list(run.glob("checkpoints/*")) else ["--overwrite"] if run.exists() else []
        cmd = [sys.executable, "-m", "frugalformers.cli", "finetune", "--no-progress", *again, *run_args, f"out={run}"]
        log = open(out / f"{name}.log", "a")  # noqa: SIM115 (the child writes it until it ends)
        jobs[name] = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    for name, job in jobs.items():
        if job.wait():
            raise SystemExit(f"{name} failed: see {out / f'{name}.log'}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--retrieval-chars", type=int, help="retrieval on excerpts of this many characters")
    what.add_argument("--task", help="a prepared longdoc task, e.g. bible_match_1024")
    ap.add_argument("--presets", nargs="+", default=["t5-tiny", "longt5-tiny", "colt5-tiny"])
    ap.add_argument("--train-rows", type=int, default=8000)
    ap.add_argument("--seq-len", type=int, default=320)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--target-len", type=int, default=8)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0, help="the fine-tuning seed (init and batch order); the rows stay")
    ap.add_argument("--eval-every", type=int, help="steps between validation scores (default: a quarter of --steps)")
    ap.add_argument("--tokenizer", default="corpus/tiny")
    ap.add_argument("--dataset", default="longdoc", help="a prepared longdoc dataset (name or folder)")
    ap.add_argument("--held-rows", type=int, default=400, help="validation and test rows (--retrieval-chars)")
    ap.add_argument("--out", default="runs/longdoc-probe")
    args = ap.parse_args(argv)
    out = Path(args.out) / (args.task or f"retrieval{args.retrieval_chars}")
    out.mkdir(parents=True, exist_ok=True)
    if args.task:
        data = [f"data.dataset={args.dataset}", f"data.task={args.task}"]
        train, test = (load_task(args.dataset, args.task, s) for s in ("train", "test"))
        metric = task_info(args.dataset, args.task)["metric"]
    else:
        files = retrieval_files(out, args.retrieval_chars, args.train_rows, args.held_rows, args.dataset)
        data = [f"data.file={files['train']}", f"data.valid_file={files['valid']}",
                f"data.test_file={files['test']}", "data.metric=em_f1"]  # fmt: skip
        train, test = read_jsonl(files["train"]), read_jsonl(files["test"])
        metric = "em_f1"
    common = [f"data.tokenizer={args.tokenizer}", f"data.seq_len={args.seq_len}", f"data.target_len={args.target_len}",
              f"data.batch_size={args.batch}", f"steps={args.steps}", "log_every=50",
              f"eval_every={args.eval_every or args.steps // 4}", "eval_batches=10", f"optim.lr={args.lr}",
              f"seed={args.seed}"]  # fmt: skip
    finetune_side_by_side(out, {p: ["--preset", p, *data, *common] for p in args.presets})
    answers = most_common_answers(train, test)
    prior = score(metric, answers, [r["label"] for r in test])
    key = "em" if metric == "em_f1" else metric
    print(
        f"| model | test {key} | distinct answers | most common answer | answer loss, own document | another row's "
        "document | difference |\n|---|---|---|---|---|---|---|"
    )
    for preset in args.presets:
        result = json.loads((out / preset / "test_metrics.json").read_text())
        preds = [r["prediction"] for r in read_jsonl(out / preset / "test_predictions.jsonl")]
        common_answer, n = Counter(preds).most_common(1)[0]
        own, other = result["answer_loss"], result["answer_loss_other_input"]
        print(
            f"| {preset} | {result[key]:.3f} | {len(set(preds))} | {common_answer!r} ({n / len(preds):.0%}) | "
            f"{own:.3f} | {other:.3f} | {other - own:+.3f} |"
        )
    print(f"| prior: always {answers[0]!r} | {prior[key]:.3f} | 1 | | | | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
