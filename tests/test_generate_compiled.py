"""The compiled decode step (torch.compile; CUDA graphs on GPU) generates what the eager path does."""

import torch

from frugalformers import build_model
from frugalformers.generate import generate


def test_compiled_decode_step_equals_eager():
    torch.manual_seed(0)
    model = build_model("llama-tiny-gqa4").eval()
    prompts = [[5, 6, 7, 8, 9], [11, 12, 13]]  # different lengths: left padding and masks
    eager = generate(model, prompts, 6)
    compiled = generate(model, prompts, 6, compile=True)
    assert compiled == eager
    t5 = build_model("t5-tiny").eval()
    assert generate(t5, prompts, 5, eos_id=1, compile=True) == generate(t5, prompts, 5, eos_id=1)


def test_a_failing_compile_falls_back_to_eager_with_a_warning(monkeypatch):
    import pytest

    def broken_compile(fn, **kwargs):
        def run(*a, **k):
            raise RuntimeError("backend compiler failed: no C++ toolchain")

        return run

    torch.manual_seed(0)
    model = build_model("llama-tiny").eval()
    prompts = [[5, 6, 7], [8, 9]]
    eager = generate(model, prompts, 4)
    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.warns(RuntimeWarning, match="compiling the decode step failed.*no C\\+\\+ toolchain"):
        assert generate(model, prompts, 4, compile=True) == eager


def test_decode_options_reach_the_cache_and_keep_the_tokens():
    """generate(decode_options=...) sets up the cache with that decode attention path and generates
    the default path's tokens, for a decoder and for T5."""
    from unittest import mock

    from frugalformers.nn import attention

    torch.manual_seed(0)
    model = build_model("llama-tiny-gqa4", d_model=128, d_ff=256, n_heads=4, n_kv_heads=2, n_layers=2).eval()
    prompts = [[5, 6, 7, 8, 9], [11, 12, 13]]
    options = {"grouped_decode": "matmul"}
    with mock.patch.object(attention, "grouped_decode_attention", wraps=attention.grouped_decode_attention) as spy:
        assert generate(model, prompts, 6, decode_options=options) == generate(model, prompts, 6)
    assert spy.call_count > 0
    t5 = build_model("t5-tiny").eval()
    assert generate(t5, prompts, 5, eos_id=1, decode_options=options) == generate(t5, prompts, 5, eos_id=1)
