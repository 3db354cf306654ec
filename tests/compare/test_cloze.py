"""compare/cloze.py: the knowledge facts as span-corruption cloze, scored zero-shot. The masked
sentence puts back into the fact's sentence (span corruption's own inverse), and the scoring gives
a model that always predicts the target exact match 1 and NLL ~0, a uniform one 0 and log V."""

import contextlib
import math
from types import SimpleNamespace

import pytest
import torch

from frugalformers.compare.cloze import cloze_example, cloze_set, score_cloze
from frugalformers.data.knowledge import fact_sentences
from frugalformers.data.objectives import reconstruct
from frugalformers.data.tasks import load_task
from frugalformers.train.batches import load_tokenizer


@pytest.fixture(scope="module")
def tok(demo_data):
    return load_tokenizer("demo", "tiny")


def test_a_masked_fact_puts_back_into_its_sentence(tok):
    ex = cloze_example(tok, "The capital of Armenia is ", "Yerevan", ".")
    full = tok.encode("The capital of Armenia is Yerevan.")
    s0, eos = tok.sentinel_ids[0], tok.eos_id
    assert ex["input"].count(s0) == 1 and ex["target"][0] == s0 and ex["target"][-1] == eos
    assert reconstruct(ex["input"], ex["target"], tok.sentinel_ids, eos) == full
    assert tok.decode(ex["target"][1:-1]).strip() == "Yerevan"
    assert len(ex["words"]) == len(ex["input"]) and ex["words"][ex["input"].index(s0)] == 0
    # the object first in the sentence (templates like "{o} is the capital city of {s}.")
    first = cloze_example(tok, "", "Yerevan", " is the capital city of Armenia.")
    assert first["input"][0] == s0 and tok.decode(first["target"][1:-1]).strip() == "Yerevan"


def test_every_asked_fact_becomes_one_sentence_per_template_and_gold(tok, private_home):
    facts = fact_sentences(load_task("knowledge", "qa", "test"))
    examples = cloze_set(tok, "knowledge", "test")
    assert len({e["group"] for e in examples}) >= 0.95 * len(facts)  # few lost to tokenization
    assert len(cloze_set(tok, "knowledge", "train", limit=50)) < 120
    several = [f for f in facts if len(f["objects"]) > 1]
    assert several and all(f["relation"] == "instance_of" for f in several)


class _Oracle(torch.nn.Module):
    """Logits that put all mass on the labels (or none anywhere, `uniform`)."""

    def __init__(self, vocab: int, uniform: bool = False):
        super().__init__()
        self.vocab, self.uniform = vocab, uniform
        self.config = SimpleNamespace(routes_words=lambda: False, routes_decoder_words=lambda: False)

    def forward(self, labels, **_):
        logits = torch.zeros(*labels.shape, self.vocab)
        if not self.uniform:
            logits.scatter_(-1, labels.clamp(min=0)[..., None], 100.0)
        return SimpleNamespace(logits=logits)


def test_scoring_gives_a_perfect_model_1_and_a_uniform_one_0_and_log_v(tok, private_home):
    examples = cloze_set(tok, "knowledge", "test", limit=40)
    cpu, amp = torch.device("cpu"), contextlib.nullcontext
    perfect = score_cloze(_Oracle(tok.vocab_size), tok, examples, cpu, amp, batch_size=16)
    assert (
        perfect["exact"] == 1.0 and perfect["nll"] < 1e-6 and perfect["groups"] == len({e["group"] for e in examples})
    )
    uniform = score_cloze(_Oracle(tok.vocab_size, uniform=True), tok, examples, cpu, amp, batch_size=16)
    assert uniform["exact"] == 0.0
    assert uniform["nll"] == pytest.approx(math.log(tok.vocab_size), rel=1e-5)
    assert set(uniform["by_relation"]) == {e["relation"] for e in examples}
