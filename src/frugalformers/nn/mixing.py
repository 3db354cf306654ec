"""Token mixing without attention (Lee-Thorp et al. 2021, "FNet").

`FourierMixing`: `y = Re(F_seq(F_hidden(x)))`, the unnormalised 2D DFT over (sequence, hidden)
keeping the real part once at the end (FNet eq. 3; official `f_net/layers.py` FourierTransform).
It has no parameters and takes no mask: padding tokens take part in the mixing, so pad to the
training length (the paper's behaviour).

Implementations:
- `impl="fft"`: `torch.fft.fft2` in float32 (cuFFT has no bf16, and fp16 needs power-of-two
  sizes), cast back to the input dtype.
- `impl="dft"`: DFT as real GEMMs on tensor cores. With W = C - iS (C, S the cos and sin
  matrices) and real x, Re(W_s X W_h) = C_s X C_h - S_s X S_h, computed as two matmuls:
  Z = X @ [C_h | S_h] (T x 2d), then Y = [C_s | -S_s] @ [Z_c ; Z_s].
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

IMPLS = ("fft", "dft")


def dft_matrices(n: int, dtype=torch.float64, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin parts of the unnormalised DFT matrix exp(-2 pi i jk / n): W = C - iS."""
    k = torch.arange(n, dtype=torch.float64, device=device)
    angle = 2 * math.pi * torch.remainder(torch.outer(k, k), n) / n  # remainder keeps the angle exact
    return angle.cos().to(dtype), angle.sin().to(dtype)


class FourierMixing(nn.Module):
    def __init__(self, impl: str = "fft", max_seq_len: int | None = None, d_model: int | None = None):
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"impl={impl!r} is not a Fourier implementation; use one of {IMPLS}")
        self.impl = impl
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _mats(self, n: int, device, dtype):
        key = (n, device, dtype)
        if key not in self._cache:
            c, s = dft_matrices(n, torch.float32, device)
            self._cache[key] = (c.to(dtype), s.to(dtype))
        return self._cache[key]

    def forward(self, x: torch.Tensor, ctx=None) -> torch.Tensor:
        """x (B, T, d) -> Re(FFT2(x)) (B, T, d) in x's dtype."""
        if self.impl == "fft":
            no_autocast = (
                torch.autocast(x.device.type, enabled=False)
                if x.device.type in ("cuda", "cpu")
                else contextlib.nullcontext()
            )
            with no_autocast:
                return torch.fft.fft2(x.float(), dim=(-2, -1)).real.to(x.dtype)
        B, T, d = x.shape
        dtype = x.dtype if x.dtype != torch.float32 else torch.float32
        ch, sh = self._mats(d, x.device, dtype)
        cs, ss = self._mats(T, x.device, dtype)
        z = x.to(dtype) @ torch.cat([ch, sh], dim=1)  # (B, T, 2d): [X C_h | X S_h]
        z = torch.cat([z[..., :d], z[..., d:]], dim=1)  # (B, 2T, d): [X C_h ; X S_h]
        y = torch.cat([cs, -ss], dim=1) @ z  # (B, T, d): C_s X C_h - S_s X S_h
        return y.to(x.dtype)
