"""Precision under autocast: the dtype a block's matmuls run in, and regions that stay float32.

Under autocast the residual stream stays float32 (norms return their input's dtype) while the
matmuls run in bf16. A block that gathers or sends rows before its GEMMs (MoE and MoWE dispatch,
expert parallelism) should cast them first: half the bytes moved, the same numbers (autocast would
cast the gathered rows anyway), and kernels that need bf16 operands (`torch._grouped_mm`) apply.
"""

from __future__ import annotations

import contextlib

import torch


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The autocast dtype when autocast is on for x's device, else x's own dtype."""
    device = x.device.type
    if device in ("cuda", "cpu") and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


def autocast_off(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """A region where autocast is off for x's device, so float32 math (routers, FFTs) stays float32:
    inside autocast even a matmul of float32 tensors runs in bf16."""
    device = x.device.type
    return torch.autocast(device, enabled=False) if device in ("cuda", "cpu") else contextlib.nullcontext()
