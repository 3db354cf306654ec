"""A small reader of the WordNet 3.0 database files (`data.noun`, `data.verb`, ...).

Each synset line is `offset lex_filenum ss_type w_cnt word lex_id ... p_cnt ptr... | gloss`
(wndb(5WN)). `lex_filenum` indexes the 45 lexicographer files (supersenses) below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()


@dataclass
class Synset:
    key: str  # "n00001740"
    lexname: str
    words: list[str]
    gloss: str
    hypernyms: list[str] = field(default_factory=list)  # "@" pointers
    instance_of: list[str] = field(default_factory=list)  # "@i" pointers


def read_wordnet(root: Path) -> dict[str, Synset]:
    base = next(p for p in (root / "usr/share/wordnet", root) if (p / "data.noun").exists())
    synsets: dict[str, Synset] = {}
    for pos, letter in (("noun", "n"), ("verb", "v"), ("adj", "a"), ("adv", "r")):
        for line in (base / f"data.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  "):
                continue  # licence header
            head, _, gloss = line.partition(" | ")
            f = head.split()
            offset, lexfile, n_words = f[0], int(f[1]), int(f[3], 16)
            words = [f[4 + 2 * i].replace("_", " ") for i in range(n_words)]
            i = 4 + 2 * n_words
            n_ptr = int(f[i])
            hyper, inst = [], []
            for j in range(n_ptr):
                sym, target, tpos = f[i + 1 + 4 * j], f[i + 2 + 4 * j], f[i + 3 + 4 * j]
                tkey = ("a" if tpos == "s" else tpos) + target
                if sym == "@":
                    hyper.append(tkey)
                elif sym == "@i":
                    inst.append(tkey)
            key = letter + offset
            synsets[key] = Synset(key, LEXNAMES[lexfile], words, gloss.strip(), hyper, inst)
    return synsets


def clean_word(w: str) -> str:
    """Drop adjective markers like `(a)` / `(p)` from a lemma."""
    return w.split("(")[0].strip()
