"""What every Triton kernel here shares: the (optional) Triton import, whether a kernel can run on
a device, and the float32 tile product."""

from __future__ import annotations

import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the CPU wheel of torch comes without Triton; the GPU image has it
    triton = None

# Triton's interpreter runs kernels on CPU tensors; Triton reads the variable at import, so do we
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def runs_on(device: torch.device) -> bool:
    """Triton is there and can run on `device`: CUDA, or CPU under the interpreter."""
    return triton is not None and (device.type == "cuda" or (INTERPRET and device.type == "cpu"))


if triton is not None:

    @triton.jit
    def tile_dot(a, b, IEEE: tl.constexpr):
        """tl.dot(a, b) in float32; with IEEE (float32 inputs) full-precision products, as torch's
        matmuls without TF32 (the kernels' tests compare at float32 tolerances)."""
        if IEEE:
            return tl.dot(a, b, input_precision="ieee")
        return tl.dot(a, b)
