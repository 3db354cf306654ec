"""SentencePiece (unigram) tokenizer with the special tokens our objectives need, plus the
routing vocabulary MoWE routes by (dos Santos et al. 2023, section 3).

Ids: 0 `<pad>`, 1 `<unk>`, 2 `<s>`, 3 `</s>`, then `[CLS]`, `[SEP]`, `[MASK]` and the T5 span
sentinels `<extra_id_0>` ... `<extra_id_99>`, then the learned pieces.

Routing vocabulary: the most frequent words of the training text, most frequent first, ids 1..N;
id 0 means "not in the routing vocabulary". A word is what SentencePiece treats as one (a run of
pieces starting with the `▁` word-boundary mark); its routing key is the word lowercased with
surrounding punctuation stripped, so "The", "the" and "the," share an id. Every piece of a word
carries the word's routing id.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from frugalformers.data.store import dataset_folder

N_SENTINELS = 100
SPECIAL = ["[CLS]", "[SEP]", "[MASK]"] + [f"<extra_id_{i}>" for i in range(N_SENTINELS)]
_PUNCT = re.compile(r"^[\W_]+|[\W_]+$")


def routing_key(word: str) -> str:
    w = word.lower()
    stripped = _PUNCT.sub("", w)
    return stripped or w


class Tokenizer:
    def __init__(self, model_file: str | Path, routing_file: str | Path | None = None):
        import sentencepiece as spm

        self.model_file = Path(model_file)
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        self.vocab_size = self.sp.get_piece_size()
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = 0, 1, 2, 3
        self.cls_id, self.sep_id, self.mask_id = (self.sp.piece_to_id(t) for t in ("[CLS]", "[SEP]", "[MASK]"))
        self.sentinel_ids = [self.sp.piece_to_id(f"<extra_id_{i}>") for i in range(N_SENTINELS)]
        self.special_ids = {0, 1, 2, 3, self.cls_id, self.sep_id, self.mask_id, *self.sentinel_ids}
        pieces = [self.sp.id_to_piece(i) for i in range(self.vocab_size)]
        # a piece starts a new word when it carries the boundary mark (or is a special token)
        self.starts_word = np.array([p.startswith("▁") or i in self.special_ids for i, p in enumerate(pieces)])
        self.routing: dict[str, int] = {}
        if routing_file is not None and Path(routing_file).exists():
            words = [line.split("\t")[0] for line in Path(routing_file).read_text(encoding="utf-8").splitlines()]
            self.routing = {w: i + 1 for i, w in enumerate(words)}
        self._span_cache: dict[tuple, int] = {}

    @property
    def routing_size(self) -> int:
        """Routing ids in use, including 0 (out of vocabulary)."""
        return len(self.routing) + 1

    @classmethod
    def load(cls, directory: str | Path, name: str = "tiny") -> Tokenizer:
        d = Path(directory)
        if not (d / f"{name}.model").exists():
            raise ValueError(f"no tokenizer {name!r} in {d}; prepare the dataset first (`frugal data prepare`)")
        return cls(d / f"{name}.model", d / f"{name}.routing.tsv")

    def encode(self, text: str | list[str]) -> list[int] | list[list[int]]:
        return self.sp.encode(text)

    def decode(self, ids) -> str:
        return self.sp.decode([int(i) for i in ids])

    def word_ids(self, ids: list[int] | np.ndarray) -> np.ndarray:
        """Routing id of the word each token belongs to (0 for out-of-vocabulary words and specials)."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.zeros(len(ids), dtype=np.int64)
        if len(ids) == 0:
            return out
        starts = np.flatnonzero(self.starts_word[ids] | (np.arange(len(ids)) == 0))
        ends = np.append(starts[1:], len(ids))
        for s, e in zip(starts.tolist(), ends.tolist()):
            out[s:e] = self._span_id(tuple(ids[s:e].tolist()))
        return out

    def causal_word_ids(self, ids: list[int] | np.ndarray) -> np.ndarray:
        """Routing ids a decoder can compute left to right: token t gets the id of the word prefix
        that ends at t (the pieces since the word's start), 0 if that prefix is not a routing word.
        A one-piece word gets its own id; a longer word is routed at its last piece, where the prefix
        is the whole word (its earlier pieces are usually not words, so they pass unrouted). Used for
        decoder MoWE layers, whose inputs at generation time are only known up to the current token
        (the paper does not say how its decoder MoWE layers route; this is our choice)."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.zeros(len(ids), dtype=np.int64)
        start = 0
        for t in range(len(ids)):
            if self.starts_word[ids[t]] or t == 0:
                start = t
            out[t] = self._span_id(tuple(ids[start : t + 1].tolist()))
        return out

    def last_word_id(self, ids: list[int] | np.ndarray) -> int:
        """`causal_word_ids(ids)[-1]` without the rest: the routing id of the word prefix that ends
        at the last token (a generation step needs only that one, and the whole row each step
        would cost the square of its length)."""
        start = len(ids) - 1
        while start > 0 and not self.starts_word[ids[start]]:
            start -= 1
        return self._span_id(tuple(int(i) for i in ids[start:]))

    def _span_id(self, span: tuple) -> int:
        rid = self._span_cache.get(span)
        if rid is None:
            if span[0] in self.special_ids:
                rid = 0
            else:
                rid = self.routing.get(routing_key(self.sp.decode(list(span)).strip()), 0)
            self._span_cache[span] = rid
        return rid


def _training_lines(jsonl: Path, tmp: Path, max_chars: int) -> Path:
    """Plain text lines for SentencePiece (one paragraph line each), at most `max_chars` in total."""
    path = tmp / "train.txt"
    total = 0
    with open(jsonl, encoding="utf-8") as f, open(path, "w", encoding="utf-8") as out:
        for line in f:
            for para in json.loads(line)["text"].split("\n"):
                para = para.strip()
                if len(para) >= 2:
                    out.write(para[:4000] + "\n")
                    total += len(para)
            if total >= max_chars:
                break
    return path


def build_routing_vocab(jsonl: Path, max_words: int = 1_000_000, min_count: int = 3) -> list[tuple[str, int]]:
    counts: Counter[str] = Counter()
    with open(jsonl, encoding="utf-8") as f:
        for line in f:
            counts.update(routing_key(w) for w in json.loads(line)["text"].split())
    return [(w, c) for w, c in counts.most_common(max_words) if c >= min_count]


def train_tokenizer(
    jsonl: Path, out_dir: Path, vocab_size: int, name: str = "tiny", max_chars: int = 60_000_000
) -> Tokenizer:
    """Train a unigram SentencePiece model on the documents of `jsonl`; write NAME.model and
    NAME.routing.tsv (word, count) into `out_dir`."""
    import sentencepiece as spm

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        lines = _training_lines(jsonl, Path(tmp), max_chars)
        spm.SentencePieceTrainer.train(
            input=str(lines),
            model_prefix=str(out_dir / name),
            vocab_size=vocab_size,
            model_type="unigram",
            character_coverage=0.9999,
            pad_id=0,
            unk_id=1,
            bos_id=2,
            eos_id=3,
            user_defined_symbols=SPECIAL,
            input_sentence_size=2_000_000,
            shuffle_input_sentence=True,
            num_threads=2,
            max_sentence_length=16384,
            byte_fallback=True,  # any character survives encoding as bytes
            minloglevel=2,
        )
    (out_dir / f"{name}.vocab").unlink(missing_ok=True)
    vocab = build_routing_vocab(jsonl)
    (out_dir / f"{name}.routing.tsv").write_text("".join(f"{w}\t{c}\n" for w, c in vocab), encoding="utf-8")
    return Tokenizer(out_dir / f"{name}.model", out_dir / f"{name}.routing.tsv")


def load_tokenizer(dataset: str, name: str) -> Tokenizer:
    """The tokenizer `name` of `dataset`, or `OTHER_DATASET/name` for a dataset without its own
    (e.g. `longdoc` tasks with `data.tokenizer=corpus/tiny`)."""
    if "/" in name:
        dataset, name = name.rsplit("/", 1)
    folder = dataset_folder(dataset) / "tokenizer"
    if not (folder / f"{name}.model").exists():
        have = sorted(p.stem for p in folder.glob("*.model")) if folder.exists() else []
        if have:
            raise ValueError(f"dataset {dataset!r} has no tokenizer {name!r}; its tokenizers: {have}")
        raise ValueError(
            f"dataset {dataset!r} has no tokenizer of its own (a task suite): name the pretraining data's, "
            f"e.g. data.tokenizer=corpus/tiny (DATASET/NAME)"
        )
    return Tokenizer.load(folder, name)
