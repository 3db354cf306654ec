"""Did pretraining store the facts? A zero-shot cloze of the `knowledge` facts, before any
fine-tuning: each fact's pretraining sentence with its object replaced by one span-corruption
sentinel, scored as the T5 span objective would score it (the target `<extra_id_0> object EOS`).

A fine-tuned QA model can only retrieve what pretraining stored (Allen-Zhu & Li 2023 separate
storage from extraction the same way), and MoWE's claim is about storage: its word experts
memorise. Scored on the facts the test questions ask about and, as a check, on as many facts of
the training questions; a model pretrained without the facts gives what the sentences alone let
one guess.

Per example: `exact` when every object token and the EOS after it are the model's argmax under
teacher forcing (what greedy decoding would produce); `nll` the mean negative log-likelihood of
the object's tokens. A fact with several gold objects counts as exact when any of them is.
"""

from __future__ import annotations

import random
from collections import defaultdict

import torch

from frugalformers.data.knowledge import fact_sentences
from frugalformers.data.objectives import seq2seq_batch
from frugalformers.data.shards import pad_batch
from frugalformers.data.tasks import load_task
from frugalformers.data.tokenizer import Tokenizer
from frugalformers.train.batches import decoder_word_ids

INPUT_LEN, TARGET_LEN = 64, 32


def cloze_example(tok: Tokenizer, before: str, obj: str, after: str) -> dict | None:
    """Token ids of one masked sentence: input (the sentence with the object's tokens replaced by
    the first sentinel, then EOS), target (sentinel, object, EOS), the input's routing ids (the
    masked words unrouted, as span corruption leaves them); None where the object's tokens do
    not stand apart in the sentence's tokenization (a piece spans its boundary)."""
    full = tok.encode(before + obj + after)
    head = tok.encode(before.rstrip()) if before.strip() else []
    with_obj = tok.encode(before + obj)
    if full[: len(with_obj)] != with_obj or with_obj[: len(head)] != head or len(with_obj) == len(head):
        return None
    s0, eos = tok.sentinel_ids[0], tok.eos_id
    words = tok.word_ids(full).tolist()
    return {
        "input": full[: len(head)] + [s0] + full[len(with_obj) :] + [eos],
        "target": [s0] + full[len(head) : len(with_obj)] + [eos],
        "words": words[: len(head)] + [0] + words[len(with_obj) :] + [0],
    }


def cloze_set(tok: Tokenizer, dataset: str, split: str, limit: int | None = None, seed: int = 0) -> list[dict]:
    """Examples for the facts a QA split asks about (at most `limit` sentences, one per fact and
    template, a seeded sample), one per sentence and gold object; each carries its `group` (the
    sentence) and relation."""
    facts = fact_sentences(load_task(dataset, "qa", split))
    if limit is not None and len(facts) > limit:
        facts = random.Random(seed).sample(facts, limit)
    out = []
    for g, f in enumerate(facts):
        for obj in f["objects"]:
            ex = cloze_example(tok, f["before"], obj, f["after"])
            if ex is not None:
                out.append({**ex, "group": g, "relation": f["relation"]})
    return out


@torch.no_grad()
def score_cloze(model, tok: Tokenizer, examples: list[dict], device, autocast, batch_size: int = 64) -> dict:
    """Exact match (teacher-forced argmax of the object and its EOS) and mean object NLL, overall
    and per relation. A group (fact and template) is exact when any of its gold objects is."""
    model.eval()
    routes, decoder_routes = model.config.routes_words(), model.config.routes_decoder_words()
    exact_by_group: dict[int, bool] = defaultdict(bool)
    relation_of: dict[int, str] = {}
    nll_sum, nll_n = 0.0, 0
    for i in range(0, len(examples), batch_size):
        chunk = examples[i : i + batch_size]
        pairs = [(e["input"][:INPUT_LEN], e["target"][:TARGET_LEN]) for e in chunk]
        batch = seq2seq_batch(pairs, tok.pad_id, INPUT_LEN, TARGET_LEN)
        if routes:
            batch["word_ids"] = pad_batch([e["words"][:INPUT_LEN] for e in chunk], 0, INPUT_LEN)[0]
        if decoder_routes:
            batch["decoder_word_ids"] = decoder_word_ids(tok, [p[1] for p in pairs], TARGET_LEN)
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast():
            logits = model(**batch).logits.float()  # (B, TARGET_LEN, V)
        logp = logits.log_softmax(-1)
        labels = batch["labels"]  # (B, TARGET_LEN): sentinel, object..., EOS, then -100
        gold = labels.clamp(min=0)
        token_logp = logp.gather(-1, gold[..., None])[..., 0]  # (B, TARGET_LEN)
        hit = logits.argmax(-1) == gold  # (B, TARGET_LEN)
        for j, e in enumerate(chunk):
            n_obj = len(pairs[j][1]) - 2  # between the sentinel and the EOS
            span = slice(1, n_obj + 2)  # the object's tokens and the EOS after them
            exact_by_group[e["group"]] |= bool(hit[j, span].all())
            relation_of[e["group"]] = e["relation"]
            nll_sum -= float(token_logp[j, 1 : n_obj + 1].sum())
            nll_n += n_obj
    by_relation: dict[str, list[bool]] = defaultdict(list)
    for g, ok in exact_by_group.items():
        by_relation[relation_of[g]].append(ok)
    n = len(exact_by_group)
    return {
        "exact": sum(exact_by_group.values()) / max(n, 1),
        "nll": nll_sum / max(nll_n, 1),
        "groups": n,
        "examples": len(examples),
        "by_relation": {r: sum(v) / len(v) for r, v in sorted(by_relation.items())},
    }
