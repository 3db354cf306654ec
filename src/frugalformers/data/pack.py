"""`frugal data pack`: a compact copy of a dataset's tokenizer and token shards, small enough to
carry to another machine (default < 40 MB): the validation shard whole, the training shard cut."""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from frugalformers.data.shards import open_shard, shard_path
from frugalformers.data.sources import frugal_home
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


def pack_archive(names: list[str], out: str | Path, tokenizer: str = "tiny", max_mb: float = 40.0,
                 words: bool = False, log=print) -> Path:  # fmt: skip
    """Several prepared datasets in one `.tar.xz` laid out as `$FRUGAL_HOME` is (`datasets/NAME/`),
    for `frugal data unpack` on another machine: a pretraining dataset as `pack` copies it (the
    tokenizer, the validation shard, the training shard cut to `max_mb`), a task suite whole (its
    tasks, long documents and tokenizers)."""
    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "datasets"
        for name in names:
            src = dataset_dir(name)
            if not (src / "manifest.json").exists():
                raise ValueError(f"dataset {name!r} is not prepared; run `frugal data prepare {name}` first")
            dst = root / name
            if (src / "shards" / tokenizer).exists():
                pack(name, dst, tokenizer, max_mb, words)
            parts = ("tasks", "long") if (src / "shards" / tokenizer).exists() else ("tasks", "long", "text")
            for part in parts:  # a suite's text too: `frugal data mix` adds it to another's shards
                if (src / part).exists():
                    shutil.copytree(src / part, dst / part)
            if (src / "tokenizer").exists() and not (dst / "tokenizer").exists():
                shutil.copytree(src / "tokenizer", dst / "tokenizer")
            meta = json.loads((src / "manifest.json").read_text())
            meta["packed"] = {"tokenizer": tokenizer, "max_mb": max_mb, "words": words}
            dst.mkdir(parents=True, exist_ok=True)
            (dst / "manifest.json").write_text(json.dumps(meta, indent=2))
            log(f"  {name}: {sum(p.stat().st_size for p in dst.rglob('*') if p.is_file()) / 1e6:.1f} MB")
        out.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(out, "w:xz") as tar:
            tar.add(root, arcname="datasets")
    return out


def unpack_archive(archive: str | Path, force: bool = False) -> list[str]:
    """Extract a `pack_archive` file into $FRUGAL_HOME; a dataset already there is kept unless
    `force`. Returns the dataset names unpacked."""
    archive = Path(archive)
    if not archive.exists():
        raise ValueError(f"{archive}: no such file (make it with `frugal data pack NAME ... --out FILE.tar.xz`)")
    home = frugal_home()
    done = []
    with tarfile.open(archive, "r:xz") as tar:
        members = tar.getmembers()
        names = sorted({Path(m.name).parts[1] for m in members if len(Path(m.name).parts) > 1})
        for m in members:
            parts = Path(m.name).parts
            if parts[0] != "datasets" or ".." in parts or m.issym() or m.islnk():
                raise ValueError(f"{archive}: unexpected member {m.name!r}; not an archive of `frugal data pack`")
        for name in names:
            mine = [m for m in members if Path(m.name).parts[1:2] == (name,)]
            if (home / "datasets" / name).exists():
                if force:
                    shutil.rmtree(home / "datasets" / name)
                else:  # add what it lacks (another tokenizer's shards, say), never replace a file
                    mine = [m for m in mine if m.isfile() and not (home / m.name).exists()]
                    if not mine:
                        continue
            tar.extractall(home, members=mine)
            done.append(name)
    return done
