"""A pretraining mixture: one dataset's text, upsampled, added to another dataset's token shards.

MoWE's knowledge study (dos Santos et al. 2023, Section 5) pretrains on text that holds the facts
later asked about closed-book. Our `knowledge` dataset has the facts as sentences but no shards of
its own, so `frugal data mix knowledge --into corpus --tokenizer tiny --times 8` writes
`knowledge/shards/corpus/tiny`: the `corpus/tiny` train tokens followed by 8 copies of the facts
(each copy's documents in a fresh order, so no two copies fall into the same windows), and the
corpus's validation tokens unchanged, so held-out loss compares with a model pretrained on
`corpus` alone. A recipe pretrains on it with `data: {dataset: knowledge, tokenizer: corpus/tiny}`.
Routing ids (MoWE) are copied from the base shards or computed from their tokens.

`with_task="qa"` adds that task's *training* pairs as text too ("question answer.", 20 to a
document, in every copy): the "mixed training" of Allen-Zhu & Li 2023 (Physics of Language Models
3.1), under which a small model pretrained on facts learns to answer questions about subjects whose
facts it saw only as sentences. The validation and test questions never enter pretraining.
"""

from __future__ import annotations

import json
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from frugalformers.data.knowledge import knowledge_subject, unrouted_share
from frugalformers.data.shards import _dtype, open_shard, shard_path
from frugalformers.data.store import dataset_folder
from frugalformers.data.tasks import load_task
from frugalformers.data.tokenizer import load_tokenizer
from frugalformers.files import atomic_dir

COPY_CHUNK = 1 << 24  # tokens per copy step (memory-bounded copies of the base shards)


def mix_settings(add: str, into: str, tokenizer: str, times: int, seed: int = 0, with_task: str | None = None) -> dict:
    """What a mixture's meta.json records under "mix" (and what tells two mixtures apart)."""
    settings = {"base": f"{into}/{tokenizer}", "added": add, "times": times, "seed": seed}
    if with_task:
        settings["task"] = with_task
    return settings


def mix_shards(
    add: str,
    into: str,
    tokenizer: str,
    times: int,
    seed: int = 0,
    force: bool = False,
    log=print,
    with_task: str | None = None,
) -> Path:
    """Write ADD/shards/INTO/TOKENIZER (see the module docstring); returns the folder. An existing
    mixture made with other settings is refused unless `force`."""
    if times < 1:
        raise ValueError(f"--times={times}: the added text must appear at least once")
    base = shard_path(into, tokenizer)
    tok = load_tokenizer(into, tokenizer)
    src = dataset_folder(add) / "text" / "train.jsonl"
    if not src.exists():
        raise ValueError(f"dataset {add!r} has no text/train.jsonl to mix in")
    final = dataset_folder(add) / "shards" / into / tokenizer
    settings = mix_settings(add, into, tokenizer, times, seed, with_task)
    if (final / "meta.json").exists() and not force:
        have = json.loads((final / "meta.json").read_text()).get("mix")
        if have == settings:
            log(f"{final} is already this mixture")
            return final
        raise ValueError(f"{final} holds another mixture ({have}); add --force to replace it with {settings}")
    docs = [json.loads(line)["text"] for line in open(src, encoding="utf-8")]
    task_docs = task_text(add, with_task, seed) if with_task else []
    ids = [list(x) + [tok.eos_id] for x in tok.sp.encode(docs + task_docs)]
    added = sum(len(x) for x in ids)
    task_tokens = sum(len(x) for x in ids[len(docs) :])  # the task's documents come last
    rng = random.Random(seed)
    with atomic_dir(final) as tmp:
        meta = json.loads((base / "meta.json").read_text())
        meta["tokens"] = {}
        for split in ("train", "valid"):
            tokens, words, _ = open_shard(base, split)
            with open(tmp / f"{split}.tokens.bin", "wb") as ft, open(tmp / f"{split}.words.bin", "wb") as fw:
                for s in range(0, len(tokens), COPY_CHUNK):
                    ft.write(np.asarray(tokens[s : s + COPY_CHUNK]).tobytes())
                if words is not None:
                    for s in range(0, len(words), COPY_CHUNK):
                        fw.write(np.asarray(words[s : s + COPY_CHUNK], dtype=np.uint32).tobytes())
                else:
                    for w in routing_ids(tokens, tok, into, tokenizer):
                        fw.write(w.astype(np.uint32).tobytes())
                n = len(tokens)
                if split == "train":
                    for _ in range(times):
                        order = list(range(len(ids)))
                        rng.shuffle(order)
                        flat = [t for i in order for t in ids[i]]
                        ft.write(np.asarray(flat, dtype=_dtype(tok.vocab_size)).tobytes())
                        fw.write(tok.word_ids(flat).astype(np.uint32).tobytes())
                        n += len(flat)
                meta["tokens"][split] = n
        meta["words"] = True
        meta["mix"] = settings
        meta["added_tokens"] = added
        if with_task:
            meta["added_task_tokens"] = task_tokens
        if add == "knowledge":  # MoWE routes by word: what share of the asked-about subjects can it route?
            subjects = [knowledge_subject(r["text"]) for r in load_task(add, "qa", "test")]
            meta["unrouted_subject_words"] = unrouted_share(tok, [x for x in subjects if x])
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    share = added * times / meta["tokens"]["train"]
    log(
        f"{final}: {meta['tokens']['train']:,} train tokens, {add} {added:,} tokens x {times} "
        + (f"({task_tokens:,} of them the {with_task} task's training pairs) " if with_task else "")
        + f"({share:.1%} of the mixture); valid: {into}'s {meta['tokens']['valid']:,}"
        + (
            f"; {meta['unrouted_subject_words']:.0%} of the test questions' subject words are outside the "
            "routing vocabulary"
            if "unrouted_subject_words" in meta
            else ""
        )
    )
    return final


def task_text(dataset: str, task: str, seed: int = 0, per_doc: int = 20) -> list[str]:
    """The task's training pairs as pretraining documents: "text label." lines, `per_doc` to a
    document, in a seeded order (validation and test pairs are never used)."""
    rows = load_task(dataset, task, "train")
    lines = [f"{r['text'].strip()} {str(r['label']).strip()}." for r in rows]
    random.Random(seed).shuffle(lines)
    return [" ".join(lines[i : i + per_doc]) for i in range(0, len(lines), per_doc)]


def routing_ids(tokens: np.ndarray, tok, dataset: str, name: str, chunk: int = 1 << 21):
    """Routing ids of a shard's tokens, chunk by chunk, cut at EOS so no word spans two chunks
    (several processes when the shard is large)."""
    eos = np.flatnonzero(np.asarray(tokens) == tok.eos_id)
    cuts, at = [0], 0
    for e in eos.tolist():
        if e + 1 - at >= chunk:
            cuts.append(e + 1)
            at = e + 1
    if cuts[-1] != len(tokens):
        cuts.append(len(tokens))
    spans = list(zip(cuts[:-1], cuts[1:]))
    if len(spans) < 4:
        for lo, hi in spans:
            yield tok.word_ids(np.asarray(tokens[lo:hi]))
        return
    with ProcessPoolExecutor() as pool:
        yield from pool.map(_span_word_ids, [(dataset, name, np.asarray(tokens[lo:hi])) for lo, hi in spans])


def _span_word_ids(args) -> np.ndarray:
    dataset, name, ids = args
    return load_tokenizer(dataset, name).word_ids(ids)
