"""Fine-tuning rows: a prepared task's splits, or a user's CSV / JSONL files.

A user's training file (`data.file`) may come with its own validation and test files
(`data.valid_file`, `data.test_file`); without a validation file a seeded 10% of the training
rows is held out and called "valid" (never "test": with no test file there is no test score).
Labels are stripped of surrounding spaces; the label set is the training file's, sorted, and is
stored with the model (`ModelConfig.label_names`) so evaluation maps any file's labels by name.
`data.metric` scores a file: accuracy (the default) or macro-F1 for classes, em_f1 (SQuAD's
normalised exact match and token F1) for free-text answers. A classifier (bert family) refuses
validation or test labels it was not trained on; a generative model writes its answers, so for it
they are just answers it has not seen.
"""

from __future__ import annotations

from collections import Counter

import torch

from frugalformers.data.tasks import DataError, load_task, load_user_rows, task_info


def _labelled(path: str) -> list[dict]:
    rows = load_user_rows(path)
    missing = next((i for i, r in enumerate(rows) if "label" not in r), None)
    if missing is not None:
        raise DataError(f"{path}: row {missing + 1} has no `label`; fine-tuning needs one in every row")
    return [{**r, "label": r["label"].strip()} for r in rows]


def unknown_labels(path: str, rows: list[dict], labels: list[str]) -> None:
    """An error naming the labels of `rows` that the model does not know."""
    known = set(labels)
    new = sorted({r["label"] for r in rows} - known)
    if new:
        raise DataError(
            f"{path}: labels {new} are not among the {len(labels)} the model was fine-tuned on {labels}; "
            f"fix the file, or count those rows as wrong with --unknown-labels wrong"
        )


FILE_METRICS = ("accuracy", "macro_f1", "em_f1")


def task_rows(cfg) -> tuple[dict[str, list[dict]], list[str], str]:
    """(splits {train, validation, test}, the label list, the metric) of the configured task or files.
    A user's files without a test file have an empty test split."""
    d = cfg.data
    if d.metric not in FILE_METRICS:
        raise ValueError(f"data.metric={d.metric!r} is not one of {', '.join(FILE_METRICS)}")
    if d.file:
        train = _labelled(d.file)
        if d.valid_file:
            valid = _labelled(d.valid_file)
        else:
            g = torch.Generator().manual_seed(cfg.seed)
            perm = torch.randperm(len(train), generator=g).tolist()
            n_val = max(1, len(train) // 10)
            valid, train = [train[i] for i in perm[:n_val]], [train[i] for i in perm[n_val:]]
        test = _labelled(d.test_file) if d.test_file else []
        if not train:
            raise DataError(
                f"{d.file}: {len(train) + len(valid)} row(s), all held out for validation: too few to fine-tune "
                f"on; add rows (or give data.valid_file)"
            )
        labels = sorted({r["label"] for r in train})
        return {"train": train, "validation": valid, "test": test}, labels, d.metric
    if d.valid_file or d.test_file:
        raise ValueError("data.valid_file / data.test_file go with data.file (your own data), not data.task")
    if d.metric != "accuracy":
        raise ValueError(f"data.metric goes with data.file; task {d.task!r} is scored by its own metric: leave it out")
    if not d.task:
        raise ValueError("fine-tuning needs data.task=TASK (see `frugal data show DATASET`) or data.file=PATH")
    info = task_info(d.dataset, d.task)
    rows = {s: load_task(d.dataset, d.task, s) for s in ("train", "validation", "test")}
    labels = info["labels"] or sorted({r["label"] for r in rows["train"]})
    return rows, labels, info["metric"]


def check_held_out_labels(cfg, rows: dict[str, list[dict]], labels: list[str]) -> None:
    """A classifier fine-tuned on a user's file: an error naming validation / test labels it cannot
    predict (a generative model is not limited to the training file's answers)."""
    d = cfg.data
    for path, split in ((d.valid_file or d.file, "validation"), (d.test_file, "test")):
        if d.file and path:
            unknown_labels(path, rows[split], labels)


def one_class_warning(preds: list[str], labels: list[str], share: float = 0.95) -> str | None:
    """A warning when a classifier answers one class for more than `share` of a split."""
    if not preds or len(labels) < 2:
        return None
    top, n = Counter(preds).most_common(1)[0]
    if n / len(preds) > share:
        return (
            f"warning: the model predicts {top!r} for {n} of {len(preds)} validation rows ({n / len(preds):.0%}): "
            f"it has learned the majority class only; train longer (steps), raise optim.lr, or check the labels"
        )
    return None
