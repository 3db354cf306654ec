"""Position-wise feed-forward: dense (BERT: gelu / gelu_new / relu) or gated (T5.1.1 gated-gelu, SwiGLU)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from frugalformers.nn.fused_linear import fuse_linears
from frugalformers.registry import ACTIVATIONS  # noqa: F401  (the names; _ACTIVATIONS maps each to its function)


def _gelu_new(x: torch.Tensor) -> torch.Tensor:
    # tanh approximation used by GPT-2, FNet's HF config ("gelu_new") and T5.1.1's gated-gelu
    return F.gelu(x, approximate="tanh")


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,  # exact erf form, BERT's "gelu"
    "gelu_new": _gelu_new,
    "relu": F.relu,
    "silu": F.silu,
}


def activation_fn(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation called `name`; a ValueError lists the valid names."""
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"activation={name!r} is not supported; use one of {sorted(_ACTIVATIONS)}") from None


class FeedForward(nn.Module):
    """`w_out(act(w_in x))`, or with `gated=True`, `w_out(act(w_gate x) * w_in x)`.

    The gated form is T5.1.1's gated-gelu (wi_0 = w_gate, wi_1 = w_in) and Llama's SwiGLU
    (gate_proj = w_gate, up_proj = w_in, down_proj = w_out). `dropout` acts on the hidden
    activations (T5's placement); the residual dropout belongs to the enclosing block.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        activation: str = "gelu",
        gated: bool = False,
        bias: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.act = activation_fn(activation)
        self.activation = activation
        self.w_in = nn.Linear(d_model, d_ff, bias=bias)
        self.w_gate = nn.Linear(d_model, d_ff, bias=bias) if gated else None
        self.w_out = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self._fused_gate_in: tuple[torch.Tensor, torch.Tensor | None] | None = None  # set while decoding

    def fuse_projections(self) -> None:
        """Gate and input projections as one GEMM (decoding); see `nn.fused_linear`."""
        if self.w_gate is not None:
            self._fused_gate_in = fuse_linears([self.w_gate, self.w_in])

    def unfuse_projections(self) -> None:
        self._fused_gate_in = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fused_gate_in is not None:  # decoding: gate and input as one GEMM
            gate, inp = F.linear(x, *self._fused_gate_in).chunk(2, dim=-1)  # 2 x (B, T, d_ff)
            h = self.act(gate) * inp
        elif self.w_gate is None:
            h = self.act(self.w_in(x))  # (B, T, d_ff)
        else:
            h = self.act(self.w_gate(x)) * self.w_in(x)  # (B, T, d_ff)
        return self.w_out(self.dropout(h))

    def reset_parameters(self, std: float = 0.02) -> None:
        for lin in (self.w_in, self.w_gate, self.w_out):
            if lin is None:
                continue
            nn.init.normal_(lin.weight, std=std)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    def flops_per_token(self) -> int:
        """Multiply-adds x 2 of the projections (activations are not counted)."""
        n = 3 if self.w_gate is not None else 2
        return 2 * n * self.w_in.in_features * self.w_in.out_features
