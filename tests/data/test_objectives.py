import random

import pytest
import torch

from frugalformers.data.objectives import (
    UL2_DENOISERS,
    causal_lm,
    mlm_mask,
    noise_spans,
    reconstruct,
    seq2seq_batch,
    span_corruption,
    ul2_example,
)

SPECIAL = {0, 1, 2, 3, 4, 5, 6}
SENTINELS = list(range(7, 107))
VOCAB = 1000


def test_mlm_masks_exact_fraction_and_80_10_10():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(107, VOCAB, (400, 200), generator=g)
    ids[:, 150:] = 0  # padding is never predicted
    inputs, labels = mlm_mask(ids, 6, VOCAB, SPECIAL | set(SENTINELS), generator=g)
    chosen = labels != -100
    assert (chosen.sum(1) == round(150 * 0.15)).all()  # exactly 15% of the 150 real tokens
    assert not chosen[:, 150:].any()
    assert torch.equal(labels[chosen], ids[chosen])
    masked = (inputs == 6) & chosen
    kept = (inputs == ids) & chosen
    frac_mask = masked.sum().item() / chosen.sum().item()
    frac_keep = kept.sum().item() / chosen.sum().item()
    assert abs(frac_mask - 0.8) < 0.02 and abs(frac_keep - 0.1) < 0.02
    assert torch.equal(inputs[~chosen], ids[~chosen])


def test_mlm_caps_predictions_at_80():
    ids = torch.randint(107, VOCAB, (4, 1000))
    _, labels = mlm_mask(ids, 6, VOCAB, SPECIAL)
    assert ((labels != -100).sum(1) == 80).all()  # FNet's max_predictions_per_seq


@pytest.mark.parametrize("length", [2, 5, 37, 512])
@pytest.mark.parametrize("mean", [3.0, 8.0, 64.0])
def test_span_corruption_reconstructs(length, mean):
    rng = random.Random(length)
    ids = [rng.randrange(107, VOCAB) for _ in range(length)]
    inp, tgt = span_corruption(ids, SENTINELS, 3, rng, 0.15, mean)
    assert reconstruct(inp, tgt, SENTINELS, 3) == ids
    assert inp[-1] == 3 and tgt[-1] == 3


def test_noise_spans_have_the_papers_counts():
    spans = noise_spans(1000, 0.15, 3.0, random.Random(0))
    assert sum(e - s for s, e in spans) == 150 and len(spans) == 50
    assert all(s2 > e1 for (_, e1), (s2, _) in zip(spans, spans[1:]))  # separated by kept tokens


def test_ul2_uses_all_denoisers_in_equal_shares():
    rng = random.Random(0)
    ids = list(range(107, 707))
    kinds = [ul2_example(ids, SENTINELS, 3, rng)[2] for _ in range(4000)]
    for k in ("prefix", "span3", "span8", "span64"):
        assert abs(kinds.count(k) / 4000 - 1 / len(UL2_DENOISERS)) < 0.03
    inp, tgt, kind = ul2_example(ids, SENTINELS, 3, random.Random(1))
    if kind == "prefix":
        assert inp[:-1] + tgt[:-1] == ids
    else:
        assert reconstruct(inp, tgt, SENTINELS, 3) == ids


def test_seq2seq_batch_and_causal_lm():
    b = seq2seq_batch([([5, 6, 3], [7, 3]), ([5, 3], [7, 8, 9, 3])], 0, 4, 5)
    assert b["input_ids"].shape == (2, 4) and b["labels"][0].tolist() == [7, 3, -100, -100, -100]
    ids = torch.tensor([[4, 5, 0]])
    assert causal_lm(ids, torch.tensor([[1, 1, 0]]))["labels"].tolist() == [[4, 5, -100]]


def test_span_corruption_carries_routing_ids_and_hides_dropped_words():
    rng = random.Random(3)
    ids = [rng.randrange(107, VOCAB) for _ in range(60)]
    words = [1000 + i for i in range(60)]  # a distinct routing id per position
    inp, tgt, in_words = span_corruption(ids, SENTINELS, 3, random.Random(5), words=words)
    plain_inp, plain_tgt = span_corruption(ids, SENTINELS, 3, random.Random(5))
    assert (inp, tgt) == (plain_inp, plain_tgt) and len(in_words) == len(inp)
    for tok, w in zip(inp, in_words):
        if tok in SENTINELS or tok == 3:
            assert w == 0  # sentinels and EOS carry no word
        else:
            assert ids[w - 1000] == tok  # a kept token keeps its own word's id
    dropped = set(range(1000, 1060)) - set(in_words)
    assert len(dropped) == len(tgt) - 1 - sum(t in SENTINELS for t in tgt)  # dropped words never shown
