"""The demo's lines under its table: which pretrained models lost to their twins, and why; which
gained less than their scores' spread over seeds."""

import json

from frugalformers.demo import _pretraining_ties, _why_pretraining_lost


def _write(tmp_path, rows, unigram=7.12):
    """compare.json with these rows, read back as the demo reads it."""
    (tmp_path / "compare.json").write_text(json.dumps({"rows": rows, "unigram": {"valid_loss": unigram}}))
    return json.loads((tmp_path / "compare.json").read_text())


def _pair(label, pre, scratch, loss, sd=0.01):
    tasks = {"sentiment": {"sd": sd}, "topic": {"sd": 3 * sd}}
    return [
        {"label": label, "scratch": False, "average": pre, "pretrain_loss": loss, "tasks": tasks},
        {"label": f"{label}-scratch", "scratch": True, "average": scratch, "pretrain_loss": None, "tasks": tasks},
    ]


def test_names_the_losers_and_their_distance_from_the_unigram_loss(tmp_path):
    rows = _pair("bert-tiny", 0.61, 0.69, 6.99) + _pair("fnet-tiny", 0.60, 0.51, 7.07)
    line = _why_pretraining_lost(_write(tmp_path, rows))
    assert line.startswith("Pretraining lost for bert-tiny:") and "fnet-tiny" not in line
    assert "at most 0.13 below the unigram model's (7.12)" in line


def test_no_line_when_pretraining_wins_and_no_unigram_claim_far_from_it(tmp_path):
    assert _why_pretraining_lost(_write(tmp_path, _pair("bert-tiny", 0.8, 0.7, 5.0))) is None
    line = _why_pretraining_lost(_write(tmp_path, _pair("bert-tiny", 0.6, 0.7, 4.0)))
    assert line == "Pretraining lost for bert-tiny at this budget (benchmarks/QUALITY.md, demo)."


def test_names_the_gains_smaller_than_the_spread_over_seeds(tmp_path):
    rows = _pair("bert-tiny", 0.741, 0.694, 6.99) + _pair("fnet-tiny", 0.512, 0.510, 7.07)
    rows += _pair("sparse-mixer-tiny", 0.60, 0.70, 7.09)  # a loss is the other line's
    line = _pretraining_ties(_write(tmp_path, rows))
    assert line.startswith("Pretraining's gain is within the spread over seeds for fnet-tiny +0.2 points against")
    assert "a spread of 2.0" in line and "bert-tiny" not in line and "sparse-mixer" not in line
    assert _pretraining_ties(_write(tmp_path, _pair("bert-tiny", 0.741, 0.694, 6.99))) is None
