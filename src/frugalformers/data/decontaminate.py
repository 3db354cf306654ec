"""Keep evaluation inputs out of pretraining text.

The `corpus` pretraining text and the `classify` tasks come partly from the same packages (BBC
news, WordNet glosses, KJV and WEB verses), so without care a task's test inputs appear verbatim
in pretraining and the suite measures memory. `HeldOutText` finds every passage that contains a
held-out input (compared on lowercased words, whatever the line wrapping) and `scrub` drops the
passages (paragraphs, or lines where the source has one item per line) that contain one, and the
dictionary entries whose headword is a held-out word.

Matching: each line of an input (an article is looked for paragraph by paragraph) of at least
`min_words` words is found by its first `anchor` words (all of them when shorter) through a
rolling hash of word ids, then confirmed as a substring of the passage's normalised words.
Shorter lines are not looked for; single words (the `isa` pairs) are matched by headword.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

_EDGE_PUNCT = re.compile(r"^[\W_]+|[\W_]+$")
_BASE = np.uint64(1_000_003)


def normalise_words(text: str) -> list[str]:
    """Lowercased words with the punctuation at their edges stripped ("sold;" -> "sold")."""
    return [w for w in (_EDGE_PUNCT.sub("", t) for t in text.lower().split()) if w]


class HeldOutText:
    """Held-out inputs to look for (`texts`) and headwords whose dictionary entries to drop (`words`)."""

    def __init__(self, texts: Iterable[str], words: Iterable[str] = (), min_words: int = 3, anchor: int = 8):
        self.vocab: dict[str, int] = {}
        self.needles: dict[int, dict[int, list[str]]] = {}  # anchor length -> anchor hash -> normalised needles
        self.short = 0
        for line in (line for text in texts for line in text.splitlines() if line.strip()):
            ws = normalise_words(line)  # an input of several lines (an article) is looked for line by line
            if len(ws) < min_words:
                self.short += 1
                continue
            n = min(anchor, len(ws))
            h = int(self._hash(np.array([self._id(w) for w in ws[:n]], dtype=np.uint64)))
            self.needles.setdefault(n, {}).setdefault(h, []).append(" ".join(ws))
        self.words = {" ".join(normalise_words(w)) for w in words if w.strip()}
        self.hashes = {n: np.fromiter(d.keys(), dtype=np.uint64) for n, d in self.needles.items()}

    def _id(self, word: str) -> int:
        return self.vocab.setdefault(word, len(self.vocab) + 1)

    @staticmethod
    def _hash(ids: np.ndarray) -> np.uint64:
        h = np.uint64(0)
        with np.errstate(over="ignore"):
            for x in ids:
                h = h * _BASE + x
        return h

    def _window_hashes(self, ids: np.ndarray, n: int) -> np.ndarray:
        """Hash of every run of n consecutive ids (the same polynomial as `_hash`, wrapping mod 2^64)."""
        out = np.zeros(len(ids) - n + 1, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(n):
                out = out * _BASE + ids[j : len(ids) - n + 1 + j]
        return out

    def held_units(self, units: list[str]) -> set[int]:
        """Indices of the passages that contain a held-out input or are a held-out headword's entry.
        The passages' words are scanned as one sequence (a 0 id between passages, which no input
        has), so the hashing runs once per anchor length for the whole document."""
        found = set()
        if self.words:
            for i, u in enumerate(units):
                head = u.strip().split("\n", 1)[0]
                if " ".join(normalise_words(head)) in self.words:
                    found.add(i)
        if not self.needles:
            return found
        words = [normalise_words(u) for u in units]
        ids, owner = [], []
        for i, ws in enumerate(words):
            ids += [self.vocab.get(w, 0) for w in ws] + [0]
            owner += [i] * (len(ws) + 1)
        ids_a, owner_a = np.array(ids, dtype=np.uint64), np.array(owner)
        for n, table in self.needles.items():
            if len(ids_a) < n:
                continue
            windows = self._window_hashes(ids_a, n)
            for pos in np.nonzero(np.isin(windows, self.hashes[n]))[0]:
                unit = int(owner_a[pos])
                if unit in found:
                    continue
                joined = " ".join(words[unit])
                if any(needle in joined for needle in table.get(int(windows[pos]), [])):
                    found.add(unit)
        return found


def scrub(docs: list[dict], held: HeldOutText, line_sources: tuple[str, ...] = ()) -> tuple[list[dict], dict]:
    """Drop every passage of `docs` that holds a held-out input: lines for the sources in
    `line_sources` (one item per line, e.g. a Bible's verses), paragraphs elsewhere. Returns the
    docs left (a doc left empty is dropped) and the count of passages dropped per source."""
    out, dropped = [], {}
    for d in docs:
        sep = "\n" if d["source"] in line_sources else "\n\n"
        units = d["text"].split(sep)
        drop = held.held_units(units)
        keep = [u for i, u in enumerate(units) if i not in drop]
        if len(keep) < len(units):
            dropped[d["source"]] = dropped.get(d["source"], 0) + len(units) - len(keep)
        if keep:
            out.append({**d, "text": sep.join(keep)})
    return out, dropped
