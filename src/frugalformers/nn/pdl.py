"""Programmatic dependent launch (PDL, Hopper and newer): a kernel launched with it may start while
the kernel before it in the stream is still draining, and waits for it (`griddepcontrol.wait`)
before touching that kernel's outputs. A decode step is a chain of ~10 short kernels per layer,
each a few microseconds long, so the gap between kernels (launch, ramp-up, tail) is a large part
of the step: on an H200 at batch 32 a 2 us GEMM took 6 us (RESULTS.md `decode-gemm`).

Our Triton decode kernels (`nn.skinny_gemm`, `nn.decode_attention`) take a `pdl` flag; the GEMM
fetches its first weight tile before it waits (weights do not change while decoding). Inductor
generates PDL code for its own kernels when `torch._inductor.config.triton.enable_pdl` is set
(torch >= 2.10); `inductor_pdl` sets it around a compiled call and is a no-op where the option
does not exist.
"""

from __future__ import annotations

import contextlib


def inductor_has_pdl() -> bool:
    """Whether this torch's Inductor can generate PDL code at all."""
    from torch._inductor import config

    return hasattr(config.triton, "enable_pdl")


def inductor_pdl(enabled: bool):
    """A context in which Inductor generates (and launches) its Triton kernels with PDL; a no-op
    when disabled or where this torch's Inductor has no such option."""
    if not (enabled and inductor_has_pdl()):
        return contextlib.nullcontext()
    from torch._inductor import config

    return config.patch({"triton.enable_pdl": True})
