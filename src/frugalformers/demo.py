"""`frugal demo` until the trainer lands: the model zoo, then each tiny preset built, run forward
and backward on random tokens, saved, reloaded and checked to give identical outputs."""

from __future__ import annotations

import tempfile
import time

import torch

from frugalformers.api import build_model, count_parameters, example_inputs
from frugalformers.bench.report import format_table
from frugalformers.checkpoint import load, save
from frugalformers.presets import PRESETS
from frugalformers.zoo import zoo_table


def run_demo(seq_len: int = 64) -> int:
    print("frugalformers model zoo\n")
    print(zoo_table())
    print(f"\nTiny models: forward + backward on random tokens (batch 4 x {seq_len}), save, reload, compare\n")
    torch.manual_seed(0)
    rows = []
    for name in [n for n in PRESETS if "tiny" in n]:
        model = build_model(name)
        inputs = example_inputs(model.config, 4, seq_len)
        t0 = time.perf_counter()
        out = model(**inputs)
        (out.logits if out.logits is not None else out.hidden).float().pow(2).mean().backward()
        ms = (time.perf_counter() - t0) * 1e3
        model.eval()
        with tempfile.TemporaryDirectory() as d, torch.no_grad():
            save(model, d)
            again = load(d).eval()
            a, b = model(**inputs), again(**inputs)
            key = "logits" if a.logits is not None else "hidden"
            same = torch.equal(getattr(a, key), getattr(b, key))
        rows.append(
            {
                "preset": name,
                "params": count_parameters(model),
                "fwd+bwd ms (CPU)": ms,
                "output": tuple(getattr(a, key).shape),
                "reload identical": "yes" if same else "NO",
            }
        )
    print(format_table(rows))
    return 0 if all(r["reload identical"] == "yes" for r in rows) else 1
