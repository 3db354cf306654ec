"""Learning-rate schedules: linear warm-up, then linear / cosine decay to zero, inverse square
root (T5), or constant."""

from __future__ import annotations

import math

import torch


def lr_factor(step: int, warmup: int, total: int, kind: str) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    if kind == "inverse_sqrt":
        return math.sqrt(max(warmup, 1) / (step + 1))
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"schedule={kind!r} is not one of linear, cosine, inverse_sqrt, constant")


def make_scheduler(optimizer: torch.optim.Optimizer, warmup: int, total: int, kind: str):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, total, kind))
