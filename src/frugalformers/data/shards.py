"""Token shards and the resumable loader.

A shard set is a folder `shards/TOKENIZER/` inside a prepared dataset with flat arrays
`{split}.tokens.bin` (uint16 when the vocabulary fits, else uint32; documents separated by EOS)
and, aligned with them, `{split}.words.bin` (uint32 routing ids, for MoWE), plus `meta.json`.
Arrays are memory-mapped, never read whole.

`TokenLoader` cuts a shard into fixed-length windows and visits them in a seeded shuffled order
per epoch; its `state_dict()` (epoch, position) restores exactly the same next batches.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from frugalformers.data.store import dataset_dir
from frugalformers.files import atomic_dir


def _dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 65535 else np.uint32


def _write_docs(docs: list[str], tokenizer, ft, fw) -> int:
    """Append the documents' tokens (EOS after each) and, if `fw`, their routing ids; return the count."""
    written = 0
    for ids in tokenizer.sp.encode(docs, num_threads=os.cpu_count() or 1):
        ids = list(ids) + [tokenizer.eos_id]
        ft.write(np.asarray(ids, dtype=_dtype(tokenizer.vocab_size)).tobytes())
        if fw is not None:
            fw.write(tokenizer.word_ids(ids).astype(np.uint32).tobytes())
        written += len(ids)
    return written


def build_shards(folder: Path, tokenizer, name: str, words: bool = True, batch_docs: int = 256, log=print) -> Path:
    """Tokenize `folder/text/{train,valid}.jsonl` with `tokenizer` into `folder/shards/NAME` (atomic)."""
    final = folder / "shards" / name
    with atomic_dir(final) as tmp:
        meta = {
            "tokenizer": name,
            "vocab_size": tokenizer.vocab_size,
            "dtype": np.dtype(_dtype(tokenizer.vocab_size)).name,
            "eos_id": tokenizer.eos_id,
            "routing_size": tokenizer.routing_size,
            "tokens": {},
        }
        for split in ("train", "valid"):
            src = folder / "text" / f"{split}.jsonl"
            n = 0
            with (
                open(src, encoding="utf-8") as f,
                open(tmp / f"{split}.tokens.bin", "wb") as ft,
                open(tmp / f"{split}.words.bin", "wb") as fw,
            ):
                docs: list[str] = []
                for line in f:
                    docs.append(json.loads(line)["text"])
                    if len(docs) == batch_docs:
                        n += _write_docs(docs, tokenizer, ft, fw if words else None)
                        docs = []
                if docs:
                    n += _write_docs(docs, tokenizer, ft, fw if words else None)
            meta["tokens"][split] = n
            if not words:
                (tmp / f"{split}.words.bin").unlink()
        meta["words"] = words
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    log(f"  shards/{name}: {meta['tokens']['train']:,} train and {meta['tokens']['valid']:,} valid tokens")
    return final


def shard_path(dataset: str | Path, tokenizer: str = "tiny") -> Path:
    folder = Path(dataset) if Path(dataset).is_dir() else dataset_dir(str(dataset))
    path = folder / "shards" / tokenizer
    if not (path / "meta.json").exists():
        raise ValueError(f"no token shards {tokenizer!r} in {folder}; run `frugal data prepare` for that dataset")
    return path


def open_shard(path: Path, split: str) -> tuple[np.ndarray, np.ndarray | None, dict]:
    meta = json.loads((path / "meta.json").read_text())
    n = meta["tokens"][split]
    tokens = np.memmap(path / f"{split}.tokens.bin", dtype=meta["dtype"], mode="r", shape=(n,))
    words = None
    if meta.get("words") and (path / f"{split}.words.bin").exists():
        words = np.memmap(path / f"{split}.words.bin", dtype=np.uint32, mode="r", shape=(n,))
    return tokens, words, meta


class TokenLoader:
    """Batches of fixed-length windows `(B, T)` from a token array, shuffled per epoch, resumable.

    `rank` / `world` give each data-parallel rank a disjoint stride of every epoch's order.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        seq_len: int,
        batch_size: int,
        seed: int = 0,
        words: np.ndarray | None = None,
        shuffle: bool = True,
        rank: int = 0,
        world: int = 1,
    ):
        if seq_len <= 0 or batch_size <= 0:
            raise ValueError(f"seq_len={seq_len} and batch_size={batch_size} must be positive")
        self.tokens, self.words = tokens, words
        self.seq_len, self.batch_size, self.seed, self.shuffle = seq_len, batch_size, seed, shuffle
        self.rank, self.world = rank, world
        self.n_windows = len(tokens) // seq_len
        self.batches_per_epoch = self.n_windows // (batch_size * world)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{len(tokens)} tokens make {self.n_windows} windows of {seq_len}: fewer than one batch of "
                f"{batch_size} x {world} ranks; use a shorter seq_len or a smaller batch"
            )
        self.epoch, self.position = 0, 0
        self._order: torch.Tensor | None = None

    def _epoch_order(self) -> torch.Tensor:
        if self._order is None:
            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
                order = torch.randperm(self.n_windows, generator=g)
            else:
                order = torch.arange(self.n_windows)
            self._order = order[self.rank :: self.world]
        return self._order

    def next_batch(self) -> dict[str, torch.Tensor]:
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position, self._order = self.epoch + 1, 0, None
        idx = self._epoch_order()[self.position * self.batch_size : (self.position + 1) * self.batch_size]
        self.position += 1
        starts = idx.numpy() * self.seq_len
        rows = np.stack([np.asarray(self.tokens[s : s + self.seq_len], dtype=np.int64) for s in starts])
        batch = {"input_ids": torch.from_numpy(rows)}  # (B, T)
        if self.words is not None:
            w = np.stack([np.asarray(self.words[s : s + self.seq_len], dtype=np.int64) for s in starts])
            batch["word_ids"] = torch.from_numpy(w)
        return batch

    def __iter__(self):
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise ValueError(f"loader state was saved with seed={state['seed']}, this loader has seed={self.seed}")
        self.epoch, self.position, self._order = state["epoch"], state["position"], None


def pad_batch(seqs: list[list[int]], pad_id: int, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad sequences to `length` (default: the longest) -> ids (B, L), attention mask (B, L)."""
    length = length or max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for i, s in enumerate(seqs):
        s = s[:length]
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def pack_sequences(seqs: list[list[int]], seq_len: int, eos_id: int) -> torch.Tensor:
    """Concatenate sequences (EOS between) and cut into full windows (N, seq_len); the tail is dropped."""
    flat = [t for s in seqs for t in (*s, eos_id)]
    n = len(flat) // seq_len
    return torch.tensor(flat[: n * seq_len], dtype=torch.long).view(n, seq_len)
