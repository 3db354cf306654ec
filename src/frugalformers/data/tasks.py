"""Task rows for fine-tuning and evaluation: prepared tasks, user CSV / JSONL files, metrics.

A row is `{"text": str, "label": str}` plus `"text_b"` for pair tasks. Long-document tasks are
stored by reference (document, character span) and materialised here.
"""

from __future__ import annotations

import csv
import io
import json
import re
import string
from collections import Counter
from functools import lru_cache
from pathlib import Path

from frugalformers.data.store import dataset_dir, read_jsonl

SPLITS = ("train", "validation", "test")


class DataError(ValueError):
    """Malformed user data; the message names the file, the line and the problem."""


def task_info(dataset: str, task: str) -> dict:
    path = dataset_dir(dataset) / "tasks" / task / "task.json"
    if not path.exists():
        have = (
            sorted(p.name for p in (dataset_dir(dataset) / "tasks").glob("*")) if dataset_dir(dataset).exists() else []
        )
        hint = f"tasks of {dataset!r}: {have}" if have else f"run `frugal data prepare {dataset}` first"
        raise ValueError(f"no task {task!r} in dataset {dataset!r}; {hint}")
    return json.loads(path.read_text())


@lru_cache(maxsize=4)
def _long_docs(folder: str) -> list[str]:
    return [d["text"] for d in read_jsonl(Path(folder) / "long/docs.jsonl")]


@lru_cache(maxsize=4)
def _verses(folder: str) -> list[dict]:
    return read_jsonl(Path(folder) / "long/verses.jsonl")


def _passage(verses: list[dict], start: int, key: str, n: int = 5) -> str:
    return " ".join(v[key] for v in verses[start : start + n])


def materialise(row: dict, folder: Path) -> dict:
    """Rows stored by reference (longdoc) -> plain text rows."""
    if "doc" in row:
        text = _long_docs(str(folder))[row["doc"]][row["start"] : row["end"]]
        if "question" in row:
            return {"text": f'Which word follows "{row["question"]}"?', "text_b": text, "label": row["label"]}
        return {"text": text, "label": row["label"]}
    if "candidates" in row:
        verses = _verses(str(folder))
        cands = "\n".join(f"[{i + 1}] {_passage(verses, s, 'web')}" for i, s in enumerate(row["candidates"]))
        return {"text": _passage(verses, row["query"], "kjv"), "text_b": cands, "label": row["label"]}
    return row


def load_task(dataset: str, task: str, split: str) -> list[dict]:
    """Rows of `task` in prepared `dataset`, split train / validation / test."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")
    task_info(dataset, task)
    folder = dataset_dir(dataset)
    return [materialise(r, folder) for r in read_jsonl(folder / "tasks" / task / f"{split}.jsonl")]


# ------------------------------------------------------------------ user files
def load_user_rows(path: str | Path) -> list[dict]:
    """Rows from a user CSV (header with `text`, optional `text_b`, `label`) or JSONL file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".jsonl":
        return _jsonl_rows(path)
    if path.suffix in (".csv", ".tsv"):
        return _csv_rows(path, "\t" if path.suffix == ".tsv" else ",")
    raise DataError(f"{path}: use a .csv, .tsv or .jsonl file with a `text` column (and `label`, `text_b`)")


def _check_row(path: Path, line: int, row: dict) -> dict:
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{path}:{line}: `text` is missing or empty")
    out = {"text": text}
    if row.get("text_b") not in (None, ""):
        if not isinstance(row["text_b"], str):
            raise DataError(f"{path}:{line}: `text_b` must be a string, got {row['text_b']!r}")
        out["text_b"] = row["text_b"]
    if "label" in row:
        if row["label"] in (None, ""):
            raise DataError(f"{path}:{line}: `label` is empty")
        out["label"] = str(row["label"])
    return out


def _utf8_text(path: Path, encoding: str = "utf-8") -> str:
    """The file's text, or a DataError naming the line of a byte that is not UTF-8."""
    raw = path.read_bytes()
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); save the file as UTF-8"
        ) from None


def _jsonl_rows(path: Path) -> list[dict]:
    rows = []
    for i, line in enumerate(_utf8_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{i}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{i}: each line must be a JSON object, got {type(row).__name__}")
        rows.append(_check_row(path, i, row))
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def _csv_rows(path: Path, delimiter: str) -> list[dict]:
    csv.field_size_limit(2**31 - 1)  # long documents (the default limit is 128 KB a field)
    reader = csv.DictReader(io.StringIO(_utf8_text(path, "utf-8-sig"), newline=""), delimiter=delimiter)
    if reader.fieldnames is None or "text" not in reader.fieldnames:
        raise DataError(f"{path}:1: the header must name a `text` column, got {reader.fieldnames}")
    rows = []
    try:
        for row in reader:
            line = reader.line_num
            if None in row:
                raise DataError(f"{path}:{line}: more fields than the header's {len(reader.fieldnames)}")
            if any(v is None for v in row.values()):
                raise DataError(f"{path}:{line}: fewer fields than the header's {len(reader.fieldnames)}")
            rows.append(_check_row(path, line, row))
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


# ------------------------------------------------------------------ metrics
def _normalise_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(pred: str, gold: str) -> float:
    return float(_normalise_answer(pred) == _normalise_answer(gold))


def token_f1(pred: str, gold: str) -> float:
    """SQuAD-style F1 over normalised words."""
    p, g = _normalise_answer(pred).split(), _normalise_answer(gold).split()
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if not p or not g:
        return float(p == g)
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def accuracy(preds: list[str], golds: list[str]) -> float:
    return sum(p == g for p, g in zip(preds, golds)) / max(1, len(golds))


def macro_f1(preds: list[str], golds: list[str]) -> float:
    labels = sorted(set(golds) | set(preds))
    scores = []
    for lab in labels:
        tp = sum(p == lab and g == lab for p, g in zip(preds, golds))
        fp = sum(p == lab and g != lab for p, g in zip(preds, golds))
        fn = sum(p != lab and g == lab for p, g in zip(preds, golds))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(scores) / max(1, len(scores))


def score(metric: str, preds: list[str], golds: list[str]) -> dict[str, float]:
    """The task's metric(s) as {name: value}."""
    if metric == "accuracy":
        return {"accuracy": accuracy(preds, golds)}
    if metric == "macro_f1":
        return {"macro_f1": macro_f1(preds, golds), "accuracy": accuracy(preds, golds)}
    if metric == "em_f1":
        n = max(1, len(golds))
        return {"em": sum(map(exact_match, preds, golds)) / n, "f1": sum(map(token_f1, preds, golds)) / n}
    raise ValueError(f"metric={metric!r} is not one of accuracy, macro_f1, em_f1")
