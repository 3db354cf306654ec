"""The dataset registry and what every builder shares: `register`, `prepare` (download the pinned
sources, build into a temporary folder, rename), manifests, task files, text splits, tokenizers."""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from frugalformers.data.shards import build_shards
from frugalformers.data.sources import fetch, source_record
from frugalformers.data.store import (
    building,
    dataset_dir,
    folder_bytes,
    is_prepared,
    stable_fraction,
    write_jsonl,
)
from frugalformers.data.tokenizer import train_tokenizer

BUILD_VERSION = 1
# datasets whose build changed since version 1; a copy built before is rebuilt by `prepare`
# corpus 2: the `classify` tasks' validation and test inputs removed; longdoc 2: tasks at 1k and 2k tokens
BUILD_VERSIONS = {"corpus": 2, "longdoc": 2}


class Dataset:
    def __init__(self, name: str, sources: list[str], what: str, build: Callable[[Path, dict, Callable], dict]):
        self.name, self.sources, self.what, self.build = name, sources, what, build


DATASETS: dict[str, Dataset] = {}


def register(name: str, sources: list[str], what: str):
    def deco(fn):
        DATASETS[name] = Dataset(name, sources, what, fn)
        return fn

    return deco


def get_dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; `frugal data list` shows them: {sorted(DATASETS)}")
    return DATASETS[name]


def prepare(name: str, log: Callable[[str], None] = print, force: bool = False) -> Path:
    """Build dataset `name` under $FRUGAL_HOME/datasets (a no-op when already built)."""
    if name == "all":
        for n in DATASETS:
            prepare(n, log, force)
        return dataset_dir("all").parent
    ds = get_dataset(name)
    version = BUILD_VERSIONS.get(name, BUILD_VERSION)
    if is_prepared(name) and not force:
        built = json.loads((dataset_dir(name) / "manifest.json").read_text()).get("build_version", 1)
        if built >= version:
            log(f"{name}: already prepared at {dataset_dir(name)}")
            return dataset_dir(name)
        log(f"{name}: the copy at {dataset_dir(name)} was built by an older version ({built} < {version}); rebuilding")
    t0 = time.time()
    log(f"{name}: preparing ({ds.what})")
    roots = {s: fetch(s, log) / "files" for s in ds.sources}
    with building(name) as out:
        stats = ds.build(out, roots, log)
        manifest = {
            "name": name,
            "build_version": version,
            "what": ds.what,
            "sources": [source_record(s) for s in ds.sources],
            "stats": stats,
            "seconds": round(time.time() - t0, 1),
            "bytes": folder_bytes(out),
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    log(f"{name}: done in {time.time() - t0:.0f} s, {manifest['bytes'] / 1e6:.1f} MB at {dataset_dir(name)}")
    return dataset_dir(name)


def manifest(name: str) -> dict:
    path = dataset_dir(name) / "manifest.json"
    if not path.exists():
        raise ValueError(f"dataset {name!r} is not prepared; run `frugal data prepare {name}`")
    return json.loads(path.read_text())


# ------------------------------------------------------------------ helpers
def write_task(
    out: Path,
    task: str,
    rows: list[dict],
    labels: list[str],
    metric: str,
    description: str,
    seed: int = 0,
    fractions=(0.8, 0.1, 0.1),
    splits: dict[str, list[dict]] | None = None,
) -> dict:
    """Write a task's splits (a seeded shuffle cut by `fractions`, or given `splits`) and task.json."""
    if splits is None:
        rows = list(rows)
        random.Random(seed).shuffle(rows)
        n_train = int(len(rows) * fractions[0])
        n_val = int(len(rows) * fractions[1])
        splits = {
            "train": rows[:n_train],
            "validation": rows[n_train : n_train + n_val],
            "test": rows[n_train + n_val :],
        }
    folder = out / "tasks" / task
    sizes = {k: write_jsonl(folder / f"{k}.jsonl", v) for k, v in splits.items()}
    balance = {k: dict(Counter(r["label"] for r in v).most_common()) for k, v in splits.items()}
    meta = {
        "task": task,
        "labels": labels,
        "metric": metric,
        "description": description,
        "pair": any("text_b" in r for r in rows[:10]) if rows else False,
        "sizes": sizes,
    }
    (folder / "task.json").write_text(json.dumps(meta, indent=2))
    return {"sizes": sizes, "balance": balance}


def split_text(out: Path, docs: list[dict], valid_fraction: float = 0.01) -> dict:
    """Pretraining documents into text/train.jsonl and text/valid.jsonl by a hash of their id."""
    train = [d for d in docs if stable_fraction(d["id"]) >= valid_fraction]
    valid = [d for d in docs if stable_fraction(d["id"]) < valid_fraction]
    write_jsonl(out / "text/train.jsonl", train)
    write_jsonl(out / "text/valid.jsonl", valid)
    chars = sum(len(d["text"]) for d in docs)
    return {"documents": {"train": len(train), "valid": len(valid)}, "characters": chars}


def dedupe_paragraphs(docs: list[dict], min_chars: int = 40) -> tuple[list[dict], int]:
    """Drop paragraphs seen before (exact, whitespace-normalised); return docs and the count dropped."""
    seen: set[bytes] = set()
    dropped = 0
    out = []
    for d in docs:
        keep = []
        for para in d["text"].split("\n\n"):
            key = hashlib.blake2b(" ".join(para.split()).lower().encode(), digest_size=12).digest()
            if len(para) >= min_chars and key in seen:
                dropped += 1
                continue
            seen.add(key)
            keep.append(para)
        if keep:
            out.append({**d, "text": "\n\n".join(keep)})
    return out, dropped


def _train_tokenizers(out: Path, sizes: dict[str, int], log) -> dict:
    """Train each tokenizer on the training text, then tokenize the text into shards with it."""

    stats = {}
    for tag, vocab in sizes.items():
        log(f"  training {tag} tokenizer (SentencePiece unigram, {vocab} pieces)")
        tok = train_tokenizer(out / "text/train.jsonl", out / "tokenizer", vocab, name=tag)
        shards = build_shards(out, tok, tag, log=log)
        stats[tag] = {
            "vocab_size": tok.vocab_size,
            "routing_vocab": tok.routing_size,
            "tokens": json.loads((shards / "meta.json").read_text())["tokens"],
        }
    return stats
