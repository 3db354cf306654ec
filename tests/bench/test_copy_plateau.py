"""benchmarks/copy_plateau.py end to end: our T5 and its Hugging Face twin, trained side by side on the
same batches of the marked-token task, follow the same losses, and the table reaches the file."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_ours_and_the_transformers_twin_train_alike(tmp_path):
    pytest.importorskip("transformers")
    out = tmp_path / "plateau"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "copy_plateau.py"), "--seeds", "0", "--steps", "6"]
    cmd += ["--eval-every", "3", "--batch", "8", "--seq-len", "12", "--vocab", "40", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    run = json.loads((out / "curves.json").read_text())["runs"][0]
    assert run["max_loss_gap"] < 1e-4
    ours, theirs = run["curves"]["frugalformers"], run["curves"]["transformers"]
    assert set(ours["loss"]) == set(theirs["loss"]) == {"3", "6"}
    assert ours["loss"]["6"] < ours["loss"]["3"] + 1.0  # finite, and training, not diverging
    assert "| 0 | not by 6 | not by 6 |" in (out / "table.md").read_text()


def test_bad_arguments_get_one_line(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "copy_plateau.py"), "--seq-len", "3"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})  # fmt: skip
    assert p.returncode != 0 and "--seq-len must be >= 5" in p.stderr
