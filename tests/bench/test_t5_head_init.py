"""benchmarks/t5_head_init.py end to end on the demo text: with Hugging Face's std 1.0 the untrained
T5 starts far above log(vocab), with the library's (T5X's) init near it, and both curves and the
unigram row reach the table."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_two_head_inits_side_by_side(tmp_path, demo_data):
    out = tmp_path / "head-init"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "t5_head_init.py"), "--dataset", "demo", "--d-model", "64"]
    cmd += ["--steps", "2", "--eval-every", "2", "--eval-batches", "2", "--batch", "4", "--seq-len", "64"]
    cmd += ["--threads", "1", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    curves = json.loads((out / "curves.json").read_text())
    hf, t5x = curves["hf-std-1.0"], curves["t5x-fan-in"]
    assert set(hf) == set(t5x) == {"0", "2"}
    vocab = 8192  # the demo's tiny tokenizer
    assert abs(t5x["0"] - math.log(vocab)) < 1.5 and hf["0"] > t5x["0"] + 10
    table = (out / "table.md").read_text()
    assert "| hf-std-1.0 |" in table and "| t5x-fan-in |" in table and "| unigram |" in table
