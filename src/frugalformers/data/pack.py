"""`frugal data pack`: a compact copy of a dataset's tokenizer and token shards, small enough to
carry to another machine (default < 40 MB): the validation shard whole, the training shard cut."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from frugalformers.data.shards import open_shard, shard_path
from frugalformers.data.store import dataset_dir


def pack(dataset: str, out: str | Path, tokenizer: str = "tiny", max_mb: float = 40.0, words: bool = False) -> Path:
    src = shard_path(dataset, tokenizer)
    out = Path(out)
    (out / "shards" / tokenizer).mkdir(parents=True, exist_ok=True)
    (out / "tokenizer").mkdir(exist_ok=True)
    tok_dir = dataset_dir(dataset) / "tokenizer"
    for f in (f"{tokenizer}.model", f"{tokenizer}.routing.tsv"):
        shutil.copy2(tok_dir / f, out / "tokenizer" / f)
    budget = max_mb * 1e6 - sum(p.stat().st_size for p in (out / "tokenizer").iterdir())
    meta = dict(json.loads((src / "meta.json").read_text()))
    valid, valid_words, _ = open_shard(src, "valid")
    train, train_words, _ = open_shard(src, "train")
    per_token = train.itemsize + (4 if words and train_words is not None else 0)
    n_valid = min(len(valid), int(budget * 0.1 / per_token))
    n_train = min(len(train), int((budget / per_token) - n_valid))
    if n_train <= 0:
        raise ValueError(f"max_mb={max_mb} leaves no room for training tokens")
    for split, arr, warr, n in (("train", train, train_words, n_train), ("valid", valid, valid_words, n_valid)):
        np.asarray(arr[:n]).tofile(out / "shards" / tokenizer / f"{split}.tokens.bin")
        if words and warr is not None:
            np.asarray(warr[:n]).tofile(out / "shards" / tokenizer / f"{split}.words.bin")
        meta["tokens"][split] = int(n)
    meta["words"] = bool(words and train_words is not None)
    meta["packed_from"] = dataset
    (out / "shards" / tokenizer / "meta.json").write_text(json.dumps(meta, indent=2))
    return out
