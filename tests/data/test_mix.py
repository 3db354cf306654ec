"""`frugal data mix --with-task`: a task's training pairs join the facts in pretraining, its
held-out pairs never do."""

import json

import numpy as np
import pytest

from frugalformers.data.mix import mix_shards
from frugalformers.data.store import dataset_folder
from frugalformers.data.tasks import load_task
from frugalformers.data.tokenizer import load_tokenizer


def test_mixed_training_adds_the_training_questions_and_never_the_held_out_ones(private_home):
    final = mix_shards("knowledge", "demo", "tiny", times=1, with_task="qa", log=lambda *_: None)
    meta = json.loads((final / "meta.json").read_text())
    assert meta["mix"]["task"] == "qa" and 0 < meta["added_task_tokens"] < meta["added_tokens"]
    tok = load_tokenizer("demo", "tiny")
    tokens = np.fromfile(final / "train.tokens.bin", dtype=np.uint16)
    base = json.loads((dataset_folder("demo") / "shards" / "tiny" / "meta.json").read_text())["tokens"]["train"]
    text = tok.sp.decode(tokens[base:].tolist())  # the added part: facts and training pairs
    train, test = load_task("knowledge", "qa", "train"), load_task("knowledge", "qa", "test")
    asked = {r["text"] for r in train}
    assert sum(r["text"] in text for r in train[:50]) == 50
    held_out = [r["text"] for r in test + load_task("knowledge", "qa", "validation") if r["text"] not in asked]
    assert held_out and not any(q in text for q in held_out)
    # the same settings are found again; another task setting is refused without --force
    assert mix_shards("knowledge", "demo", "tiny", times=1, with_task="qa", log=lambda *_: None) == final
    with pytest.raises(ValueError, match="holds another mixture"):
        mix_shards("knowledge", "demo", "tiny", times=1, log=lambda *_: None)


def test_the_cli_mixes_with_a_seed_as_a_recipe_can(private_home, capsys):
    """`frugal data mix ... --seed N` makes the mixture a recipe's `mix: {seed: N}` asks for (the
    hint compare gives for a different mixture on disk names it)."""
    from frugalformers.cli import main

    args = ["data", "mix", "knowledge", "--into", "demo", "--times", "1", "--seed", "3"]
    assert main(args) == 0
    meta = json.loads((dataset_folder("knowledge") / "shards" / "demo" / "tiny" / "meta.json").read_text())
    assert meta["mix"] == {"base": "demo/tiny", "added": "knowledge", "times": 1, "seed": 3}
