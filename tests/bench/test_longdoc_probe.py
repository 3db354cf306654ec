"""benchmarks/longdoc_probe.py: its retrieval rows follow longdoc's rule (the answer is the word
after the six question words in the excerpt; splits come from disjoint parts of each document; the
same files every time), and a run end to end prints the table with the prior beside the model."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("longdoc_probe", ROOT / "benchmarks" / "longdoc_probe.py")
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)


def test_retrieval_rows_follow_longdocs_rule(tmp_path, longdoc_mini):
    files = probe.retrieval_files(tmp_path / "a", 512, 40, 10, str(longdoc_mini))
    again = probe.retrieval_files(tmp_path / "b", 512, 40, 10, str(longdoc_mini))
    docs = [json.loads(x)["text"] for x in (longdoc_mini / "long/docs.jsonl").read_text().splitlines()]
    for split, path in files.items():
        rows = [json.loads(x) for x in path.read_text().splitlines()]
        assert len(rows) == (40 if split == "train" else 10) and path.read_bytes() == again[split].read_bytes()
        for r in rows:
            question = r["text"].removeprefix('Which word follows "').removesuffix('"?')
            assert len(question.split()) == 6 and f"{question} {r['label']}" in r["text_b"]
            assert len(r["text_b"]) <= 512 and any(r["text_b"] in " ".join(d.split()) for d in docs)


def test_a_probe_runs_end_to_end_and_prints_the_prior(tmp_path, longdoc_mini):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "longdoc_probe.py"), "--retrieval-chars", "256",
           "--dataset", str(longdoc_mini), "--tokenizer", "tiny", "--presets", "t5-tiny", "--train-rows", "16",
           "--held-rows", "4", "--seq-len", "96", "--batch", "4", "--steps", "4", "--out", str(tmp_path)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    lines = p.stdout.splitlines()
    assert lines[0].startswith("| model | test em | distinct answers | most common answer | answer loss, own document")
    assert lines[2].startswith("| t5-tiny | ") and lines[3].startswith("| prior: always ")
    test = json.loads((tmp_path / "retrieval256/t5-tiny/test_metrics.json").read_text())
    assert test.keys() == {"em", "f1", "answer_loss", "answer_loss_other_input"}
    own, other, gap = (float(x) for x in lines[2].strip("| ").split(" | ")[4:7])
    assert own == pytest.approx(test["answer_loss"], abs=1e-3) and gap == pytest.approx(other - own, abs=2e-3)
    # a prepared task of the same --dataset (not the installed `longdoc`)
    cmd = [*cmd[:2], "--task", "bible_match_4096", *cmd[4:], "--seed", "1"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert p.stdout.splitlines()[0].startswith("| model | test accuracy | distinct answers | most common answer |")
    assert "accuracy" in json.loads((tmp_path / "bible_match_4096/t5-tiny/test_metrics.json").read_text())
    assert "\nseed: 1\n" in (tmp_path / "bible_match_4096/t5-tiny/config.yaml").read_text()
