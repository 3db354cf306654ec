"""`longdoc`: long-input tasks on real long documents (source id, retrieval, KJV -> WEB matching) at
1k-32k tokens; rows point into the documents by offset. The 1k and 2k versions are there to find the
length at which a model starts to learn a task (each length draws its rows from its own seed, so
adding lengths leaves the others' rows as they were)."""

from __future__ import annotations

import random
from pathlib import Path

from frugalformers.data import readers
from frugalformers.data.builds import (
    register,
    write_task,
)
from frugalformers.data.corpus import CORPUS_SOURCES, bible_books
from frugalformers.data.store import (
    write_jsonl,
)

# ------------------------------------------------------------------ longdoc
LONGDOC_LENGTHS = (1024, 2048, 4096, 8192, 16384, 32768)  # target tokens; excerpts use ~4 characters per token
CHARS_PER_TOKEN = 4


@register(
    "longdoc",
    CORPUS_SOURCES[4:12],
    "long-input tasks on real long documents (source id, retrieval, KJV->WEB matching) at 1k-32k tokens",
)
def _build_longdoc(out: Path, roots: dict, log) -> dict:
    log("  collecting long documents")
    long_docs: list[dict] = []
    for title, text in readers.novels(roots):
        long_docs.append({"id": title, "label": title, "text": text})
    for src, module, label in (("sword-text-kjv", "engKJV2006eb", "KJV Bible"),):
        long_docs.append(
            {"id": module, "label": label, "text": "\n".join(t for _, t in bible_books(roots[src], module))}
        )
    for src, sub, label, pat in (
        ("linux-doc-6.1", "usr/share/doc/linux-doc-6.1", "Linux kernel docs", "*.rst.gz"),
        ("python3.11-doc", "usr/share/doc/python3.11/html/_sources", "Python docs", "*.rst.txt"),
        ("perl-doc", "usr/share/perl", "Perl docs", "*.pod"),
    ):
        reader = readers.pod_documents if pat == "*.pod" else readers.rst_documents
        text = "\n\n".join(t for _, t in reader(sorted((roots[src] / sub).rglob(pat))))
        long_docs.append({"id": label, "label": label, "text": text})
    kjv = list(readers.bible_verses(roots["sword-text-kjv"], "engKJV2006eb"))
    web = {(b, c, v): t for b, c, v, t in readers.bible_verses(roots["sword-text-web"], "engWEB2015eb")}
    verses = [{"ref": [b, c, v], "kjv": t, "web": web.get((b, c, v), "")} for b, c, v, t in kjv]
    return write_longdoc_tasks(out, long_docs, verses)


def write_longdoc_tasks(
    out: Path,
    long_docs: list[dict],
    verses: list[dict],
    lengths: tuple[int, ...] = LONGDOC_LENGTHS,
    train_at_4k: int = 2000,
    min_rows: tuple[int, int] = (100, 50),
) -> dict:
    """The longdoc tasks over `long_docs` ({id, label, text}) and parallel `verses` ({ref, kjv, web}):
    at each length, `train_at_4k` training rows at 4k tokens (fewer as inputs grow, at least
    min_rows[0]; validation and test a tenth, at least min_rows[1]), stored by reference."""
    write_jsonl(out / "long/docs.jsonl", long_docs)
    write_jsonl(out / "long/verses.jsonl", verses)
    labels = [d["label"] for d in long_docs]
    stats = {"documents": {d["label"]: len(d["text"]) for d in long_docs}, "tasks": {}}
    for length in lengths:
        n_chars = length * CHARS_PER_TOKEN
        n_train = max(min_rows[0], train_at_4k * 4096 // length)
        n_held = max(min_rows[1], n_train // 10)
        counts = {"train": n_train, "validation": n_held, "test": n_held}
        rng = random.Random(length)
        src_rows, ret_rows, match_rows = {}, {}, {}
        for split, n in counts.items():
            lo, hi = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}[split]
            src_rows[split], ret_rows[split], match_rows[split] = [], [], []
            for _ in range(n):
                d = rng.randrange(len(long_docs))
                text = long_docs[d]["text"]
                a, b = int(lo * len(text)), int(hi * len(text)) - n_chars
                start = rng.randint(a, max(a, b))
                src_rows[split].append(
                    {"doc": d, "start": start, "end": start + n_chars, "label": long_docs[d]["label"]}
                )
                words = text[start : start + n_chars].split()
                if len(words) > 50:
                    k = rng.randrange(10, len(words) - 1)
                    ret_rows[split].append(
                        {
                            "doc": d,
                            "start": start,
                            "end": start + n_chars,
                            "question": " ".join(words[k - 6 : k]),
                            "label": words[k],
                        }
                    )
                match_rows[split].append(_bible_match(rng, len(verses), n_chars, lo, hi))
        for name, task_labels, metric, what, splits in (
            ("source", labels, "accuracy", f"~{length}-token excerpt -> which work it is from", src_rows),
            (
                "retrieval",
                [],
                "em_f1",
                f"~{length}-token excerpt + six words from it -> the word that follows them",
                ret_rows,
            ),
            (
                "bible_match",
                [],
                "accuracy",
                f"KJV passage + ~{length} tokens of numbered WEB passages -> number of the same passage",
                match_rows,
            ),
        ):
            stats["tasks"][f"{name}_{length}"] = write_task(
                out, f"{name}_{length}", [], task_labels, metric, what, splits=splits
            )
    for t in stats["tasks"].values():
        t.pop("balance", None)
    return stats


def _bible_match(rng: random.Random, n_verses: int, n_chars: int, lo: float, hi: float) -> dict:
    """Candidates: WEB passages of 5 verses; the KJV query is one of them (by verse index)."""
    n_cand = max(4, n_chars // 700)  # a 5-verse passage is ~700 characters
    a, b = int(lo * n_verses), int(hi * n_verses) - 5
    starts = sorted(rng.sample(range(a, b), n_cand))
    answer = rng.randrange(n_cand)
    return {"query": starts[answer], "candidates": starts, "label": str(answer + 1)}
