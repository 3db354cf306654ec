"""The demo's line under its table: which pretrained models lost to their twins, and why."""

import json

from frugalformers.demo import _why_pretraining_lost


def _write(tmp_path, rows, unigram=7.12):
    (tmp_path / "compare.json").write_text(json.dumps({"rows": rows, "unigram": {"valid_loss": unigram}}))
    return tmp_path


def _pair(label, pre, scratch, loss):
    return [
        {"label": label, "scratch": False, "average": pre, "pretrain_loss": loss},
        {"label": f"{label}-scratch", "scratch": True, "average": scratch, "pretrain_loss": None},
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
