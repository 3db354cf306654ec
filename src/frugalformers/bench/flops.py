"""Counted FLOPs (not estimated): `torch.utils.flop_counter` over a real forward on the meta device,
so a 1B model is "run" without memory or time. Matmuls, attention (SDPA) and convolutions are
counted; elementwise ops are not (they are memory-bound and small in FLOPs). Blocks whose main
work is not a matmul (e.g. FFTs) register their own formulas with `register_flop_formula`.
"""

from __future__ import annotations

import math
import os

import torch
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula

from frugalformers.api import build_model, example_inputs


def _fft_flops(shape, dims, factor: float) -> int:
    """`factor * N * log2(L)` per transformed axis of length L over N elements: the usual estimate of
    5 N log2 L real FLOPs for a complex FFT (2.5 for real-input transforms)."""
    n = math.prod(shape)
    return int(sum(factor * n * math.log2(max(2, shape[d])) for d in dims))


@register_flop_formula(torch.ops.aten._fft_r2c)
def _fft_r2c_flops(x_shape, dim, *args, out_shape=None, **kwargs) -> int:
    return _fft_flops(x_shape, dim, 2.5)


@register_flop_formula(torch.ops.aten._fft_c2c)
def _fft_c2c_flops(x_shape, dim, *args, out_shape=None, **kwargs) -> int:
    return _fft_flops(x_shape, dim, 5.0)


# dense bf16 tensor-core peak (datasheet, TFLOP/s); override with FRUGAL_PEAK_TFLOPS
_PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "4090": 165.0}


def count_flops(model: torch.nn.Module, inputs: dict[str, torch.Tensor], backward: bool = False) -> int:
    """FLOPs of `model(**inputs)` (plus its backward if `backward`), counted on whatever device the
    model and inputs live on; pass a meta-device model and meta inputs to count for free."""
    with FlopCounterMode(display=False) as counter:
        out = model(**inputs)
        if backward:
            hidden = out.logits if getattr(out, "logits", None) is not None else out.hidden
            hidden.float().sum().backward()
    return int(counter.get_total_flops())


def flops_per_token(config, seq_len: int, batch: int = 1, model: torch.nn.Module | None = None) -> float:
    """Forward FLOPs per token of the model `config` describes, at sequence length `seq_len`
    (`model`: that model already built on the meta device, to count without building it again)."""

    if model is None:
        with torch.device("meta"):
            model = build_model(config)
    model.eval().requires_grad_(False)  # (torch.no_grad trips FlopCounterMode's module tracker)
    inputs = example_inputs(model.config, batch, seq_len, device="meta")
    total = count_flops(model, inputs)
    return total / (batch * seq_len)


def peak_flops(device: torch.device | str | None = None) -> float | None:
    """Dense bf16 peak FLOP/s of the CUDA device (datasheet), or None when unknown / on CPU."""
    if os.environ.get("FRUGAL_PEAK_TFLOPS"):
        return float(os.environ["FRUGAL_PEAK_TFLOPS"]) * 1e12
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in _PEAK_BF16_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def mfu(flops_per_step: float, step_seconds: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s over the peak."""
    if peak is None or step_seconds <= 0:
        return None
    return flops_per_step / step_seconds / peak
