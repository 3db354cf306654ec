"""Time one decode step of a decoder LM (gpt-fast's method): a static KV cache of `ctx` positions
filled with random values (a step's cost does not depend on them), one new token per row, the step
compiled (optional) and captured in a CUDA graph whose replays are timed; eager with the host clock
on CPU. Shared by `benchmarks/gqa_decode.py` and `frugal compare`'s decode cells."""

from __future__ import annotations

import statistics
import time

import torch

from frugalformers.bench.profile import profile_step
from frugalformers.bench.steps import compiled
from frugalformers.bench.timing import cuda_graph_ms


def decode_step_time(
    model,
    B: int,
    ctx: int,
    device: str,
    graphs: bool,
    repeats: int,
    compile: bool = False,
    profiles=None,
    **decode_options,
) -> float:
    """Median ms of one decode step at context `ctx` (CUDA-graph replay on GPU, eager elsewhere).
    With a list `profiles`, the step's kernel profile is appended to it; `decode_options` go to
    `setup_cache` (e.g. grouped_decode)."""
    dtype = next(model.parameters()).dtype
    model.setup_cache(B, ctx + 8, dtype=dtype, device=device, **decode_options)
    for layer in model.layers:
        layer.mixer.kv_cache.k.normal_(0, 0.5)
        layer.mixer.kv_cache.v.normal_(0, 0.5)
    ids = torch.randint(0, model.config.vocab_size, (B, 1), device=device)
    pos = torch.tensor([ctx], device=device)

    def forward(ids, pos):
        return model(ids, input_pos=pos).logits

    mode = "max-autotune-no-cudagraphs" if compile == "autotune" else None  # we capture the graph ourselves
    fn = compiled(forward, bool(compile), mode)  # a fresh compile per model and shape

    def step():
        return fn(ids, pos)

    with torch.no_grad():
        if not graphs:
            step()
            if profiles is not None:
                profiles.append(profile_step(step, device))
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                step()
                times.append((time.perf_counter() - t0) * 1e3)
            model.clear_cache()
            return statistics.median(times)

        def profile(graph):
            if profiles is not None:
                profiles.append(profile_step(graph.replay, device, steps=5))

        ms = cuda_graph_ms(step, repeats, warmup=3, on_graph=profile)
    model.clear_cache()
    return ms


def step_weight_bytes(model, B: int) -> int:
    """Weight bytes one decode step reads: every parameter once, except the (untied) input embedding
    table, of which the step gathers B rows only."""
    embed = model.embed.weight
    total = sum(t.numel() * t.element_size() for t in model.parameters())
    if model.lm_head is None:  # tied: the LM head reads the whole table
        return total
    return total - embed.numel() * embed.element_size() + B * embed.shape[1] * embed.element_size()
