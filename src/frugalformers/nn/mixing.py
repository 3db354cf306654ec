"""Token mixing without attention (Lee-Thorp et al. 2021, "FNet"): Fourier, Linear, Random, Identity.

`FourierMixing`: `y = Re(F_seq(F_hidden(x)))`, the unnormalised 2D DFT over (sequence, hidden)
keeping the real part once at the end (FNet eq. 3; official `f_net/layers.py` FourierTransform).
It has no parameters and takes no mask: padding tokens take part in the mixing, so pad to the
training length (the paper's behaviour).

Implementations:
- `impl="fft"`: `torch.fft.fft2` in float32 (cuFFT has no bf16, and fp16 needs power-of-two
  sizes), cast back to the input dtype.
- `impl="rfft"`: the same in float32 from half the spectrum: for real x, X[k1, d - k2] =
  conj(X[-k1, k2]), so the real part of the right half is the left half's real part with the
  sequence frequencies negated. A real-to-complex FFT over the hidden axis (d/2 + 1 outputs), a
  complex FFT over the sequence axis on that half only, then the mirror: about half the complex
  traffic of `fft2`, which fills the whole spectrum before its sequence FFT.
- `impl="dft"`: DFT as real GEMMs on tensor cores, in the autocast dtype. With W = C - iS (C, S
  the cos and sin matrices) and real x, Re(W_s X W_h) = C_s X C_h - S_s X S_h. Only the half
  spectrum's d/2 + 1 hidden columns are computed (the mirror above gives the rest), as two
  matmuls: Z = X @ [C_h | S_h][:, half] (T x 2(d/2+1)), then Y = [C_s | -S_s] @ [Z_c ; Z_s].
  Per token 2d(d+2) + 2T(d+2) FLOPs, half of the full-spectrum GEMMs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from frugalformers.nn.precision import autocast_off, compute_dtype

IMPLS = ("fft", "rfft", "dft", "auto")
PADDING = ("fixed", "masked")

# Sequence lengths up to which `impl="auto"` takes the DFT-as-GEMM path on CUDA. Measured on an H200
# in the whole model (benchmarks/fnet.py --compile --seq 512 8192, FNet-Base, bf16 autocast, 32k
# tokens, RESULTS.md `fnet-analysis`): the half-spectrum GEMMs win at 512 (train 40.3 vs 40.9 ms,
# inference 12.7 vs 15.0 ms) and lose at 8192 (57.8 vs 43.2 ms, 29.8 vs 15.6 ms: their FLOPs grow with
# T, the FFT's with log T). Lengths in between were not measured, so the crossover is put at the
# longest measured win. On CPU the FFT wins at every length.
DFT_GEMM_MAX_LEN_CUDA = 512


def dft_matrices(n: int, dtype=torch.float64, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin parts of the unnormalised DFT matrix exp(-2 pi i jk / n): W = C - iS."""
    k = torch.arange(n, dtype=torch.float64, device=device)
    angle = 2 * math.pi * torch.remainder(torch.outer(k, k), n) / n  # remainder keeps the angle exact
    return angle.cos().to(dtype), angle.sin().to(dtype)


def _mask_padding(x: torch.Tensor, ctx) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Zero padded positions (ctx.key_padding_mask False) and return the (B, T, 1) keep mask."""
    mask = getattr(ctx, "key_padding_mask", None) if ctx is not None else None
    if mask is None:
        return x, None
    keep = mask[:, :, None].to(x.dtype)  # (B, T, 1)
    return x * keep, keep


class _Mixer(nn.Module):
    """Shared padding policy. `padding="fixed"` (the paper, default): padded positions take part in
    the mixing like any token, so inputs must be padded to the training length. `"masked"`: padded
    positions are zeroed before the transform and their outputs zeroed after, so the content of the
    padding cannot leak into real tokens."""

    def __init__(self, padding: str = "fixed"):
        super().__init__()
        if padding not in PADDING:
            raise ValueError(f"padding={padding!r} is not a padding policy; use one of {PADDING}")
        self.padding = padding

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, ctx=None) -> torch.Tensor:
        """x (B, T, d) -> (B, T, d) in x's dtype."""
        if self.padding == "masked":
            x, keep = _mask_padding(x, ctx)
            y = self.mix(x)
            return y if keep is None else y * keep
        return self.mix(x)


def _half_spectrum_mats(d: int, T: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    h = d // 2 + 1
    ch, sh = dft_matrices(d, device=device)
    cs, ss = dft_matrices(T, device=device)
    hidden = torch.cat([ch[:, :h], sh[:, :h]], dim=1).to(dtype)  # (d, 2h)
    seq = torch.cat([cs, -ss], dim=1).to(dtype)  # (T, 2T)
    return hidden, seq


def mirror_half_spectrum(half: torch.Tensor, d: int) -> torch.Tensor:
    """The full real part (B, T, d) from its hidden columns k2 = 0..d//2 (B, T, d//2 + 1):
    Re X[k1, d - k2] = Re X[-k1, k2] for the 2D DFT X of a real input."""
    T = half.shape[-2]
    neg = (-torch.arange(T, device=half.device)) % T  # row of -k1
    mirror = half.index_select(-2, neg)[..., 1 : d - half.shape[-1] + 1].flip(-1)  # k2 = d//2+1 .. d-1
    return torch.cat([half, mirror], dim=-1)  # (B, T, d)


def real_fft2_from_half(x: torch.Tensor) -> torch.Tensor:
    """Re(fft2(x)) over the last two axes of real x (B, T, d), computed on the half spectrum."""
    half = torch.fft.fft(torch.fft.rfft(x, dim=-1), dim=-2).real  # (B, T, d//2 + 1): columns k2 = 0..d//2
    return mirror_half_spectrum(half, x.shape[-1])


class FourierMixing(_Mixer):
    def __init__(self, impl: str = "fft", padding: str = "fixed"):
        super().__init__(padding)
        if impl not in IMPLS:
            raise ValueError(f"impl={impl!r} is not a Fourier implementation; use one of {IMPLS}")
        self.impl = impl
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _gemm_mats(self, d: int, T: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """[C_h | S_h] over the half-spectrum columns (d, 2(d//2+1)) and [C_s | -S_s] (T, 2T),
        built in float64 and rounded once to `dtype`; cached per shape, device and dtype in eager
        mode. Under torch.compile they are built in the graph (which folds them into constants):
        filling the cache there would change the module's state and recompile the graph."""
        if torch.compiler.is_compiling():
            return _half_spectrum_mats(d, T, device, dtype)
        key = (d, T, device, dtype)
        if key not in self._cache:
            self._cache[key] = _half_spectrum_mats(d, T, device, dtype)
        return self._cache[key]

    def resolved_impl(self, x: torch.Tensor) -> str:
        if self.impl != "auto":
            return self.impl
        return "dft" if x.device.type == "cuda" and x.shape[1] <= DFT_GEMM_MAX_LEN_CUDA else "fft"

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, d) -> Re(FFT2(x)) (B, T, d) in x's dtype."""
        impl = self.resolved_impl(x)
        if impl in ("fft", "rfft"):
            with autocast_off(x):
                if impl == "fft":
                    return torch.fft.fft2(x.float(), dim=(-2, -1)).real.to(x.dtype)
                return real_fft2_from_half(x.float()).to(x.dtype)
        B, T, d = x.shape
        h = d // 2 + 1
        dtype = compute_dtype(x)
        hidden, seq = self._gemm_mats(d, T, x.device, dtype)
        z = x.to(dtype) @ hidden  # (B, T, 2h): [X C_h | X S_h], half-spectrum columns
        z = torch.cat([z[..., :h], z[..., h:]], dim=1)  # (B, 2T, h): [X C_h ; X S_h]
        half = seq @ z  # (B, T, h): C_s X C_h - S_s X S_h
        return mirror_half_spectrum(half, d).to(x.dtype)


class LinearMixing(_Mixer):
    """Learned dense mixing over both axes: `y = W_seq x W_hidden` (FNet's `LINEAR` ablation,
    `einsum("bij,jk,ni->bnk")`), init normal(0.02). Needs the fixed length `max_seq_len`."""

    def __init__(self, max_seq_len: int, d_model: int, padding: str = "fixed", std: float = 0.02):
        super().__init__(padding)
        self.w_seq = nn.Parameter(torch.randn(max_seq_len, max_seq_len) * std)
        self.w_hidden = nn.Parameter(torch.randn(d_model, d_model) * std)

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        if T != self.w_seq.shape[0]:
            raise ValueError(
                f"linear mixing was built for sequences of {self.w_seq.shape[0]} tokens, got {T}; pad the input to "
                f"max_seq_len={self.w_seq.shape[0]}"
            )
        h = x @ self.w_hidden  # (B, T, d)
        return torch.matmul(self.w_seq, h)  # (T, T) @ (B, T, d) -> (B, T, d)


class RandomMixing(LinearMixing):
    """FNet's `RANDOM` ablation: the same form with fixed (untrained) random matrices, lecun-normal,
    seeded per layer; stored as buffers so checkpoints reproduce them."""

    def __init__(self, max_seq_len: int, d_model: int, padding: str = "fixed", seed: int = 0):
        _Mixer.__init__(self, padding)
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w_seq", torch.randn(max_seq_len, max_seq_len, generator=g) / math.sqrt(max_seq_len))
        self.register_buffer("w_hidden", torch.randn(d_model, d_model, generator=g) / math.sqrt(d_model))


class IdentityMixing(nn.Module):
    """No token mixing (FNet's `FF_ONLY` ablation)."""

    def forward(self, x: torch.Tensor, ctx=None) -> torch.Tensor:
        return x
