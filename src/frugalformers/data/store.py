"""On-disk layout of a prepared dataset and the atomic build around it.

    $FRUGAL_HOME/datasets/NAME/
        manifest.json                 sources (package, version, sha256), sizes, split counts, build time
        text/{train,valid}.jsonl      pretraining documents {"id", "source", "text"}
        tasks/TASK/task.json          labels, metric, description
        tasks/TASK/{train,validation,test}.jsonl   {"text", ["text_b"], "label"}
        tokenizer/                    SentencePiece model(s) + routing vocabulary (when trained)

A dataset is built in a hidden temporary folder and renamed into place when complete.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from frugalformers.data.sources import frugal_home
from frugalformers.files import atomic_dir


def datasets_root() -> Path:
    return frugal_home() / "datasets"


def dataset_dir(name: str) -> Path:
    return datasets_root() / name


def is_prepared(name: str) -> bool:
    return (dataset_dir(name) / "manifest.json").exists()


def building(name: str):
    """Context manager: a temporary folder that becomes `datasets/NAME` only on success."""
    return atomic_dir(dataset_dir(name))


def write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by `key` alone: split assignment that never moves."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 2**32


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def dataset_folder(name: str) -> Path:
    """A prepared dataset by name, or a folder (e.g. made by `frugal data pack`)."""
    p = Path(name)
    if (p / "shards").exists() or (p / "tasks").exists():
        return p
    folder = dataset_dir(name)
    if not folder.exists():
        raise ValueError(f"dataset {name!r} is not prepared; run `frugal data prepare {name}` (or give a folder)")
    return folder
