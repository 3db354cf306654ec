"""What was non-finite at a skipped training step, for the run's log.

`clip_finite_grads` keeps the gradients of such a step as they were. The trainer skips a step whose
loss or gradient norm is NaN / inf and stops after `max_bad_steps` in a row. Its first bad step of a
streak is reported with `nonfinite_report`, so that a stopped run says whether the loss or only the
gradients went bad, which parameters hold the non-finite gradients, whether any weight itself is
non-finite (then an earlier update was bad, not this batch), and how large the weights and the last
good step's loss and gradient norm were.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from frugalformers.dist.state import full_tensor, local_tensor

SHOWN = 5  # parameter names listed per kind


def clip_finite_grads(model: nn.Module, max_norm: float) -> torch.Tensor:
    """`clip_grad_norm_` that leaves the gradients alone when their norm is non-finite: scaling by
    max_norm / inf or NaN would make every gradient NaN and hide which ones were bad (the step is
    skipped anyway). Returns the total norm before clipping, a plain tensor (a DTensor's full value)."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    full = full_tensor(norm)
    if torch.isfinite(full):
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return full


def _local(t: torch.Tensor) -> torch.Tensor:
    """A tensor's values on this rank: a sparse gradient's stored rows, a DTensor's local shard."""
    return t.coalesce().values() if t.is_sparse else local_tensor(t)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def nonfinite_report(model: nn.Module, loss: float, grad_norm: float, last_good: dict | None = None) -> dict:
    """A JSON-ready record of a non-finite step: call it before the gradients are cleared.

    Keys: `loss_finite`, `grad_norm` (None when non-finite), `nonfinite_grads` / `finite_grads` /
    `nonfinite_params` (counts and the first names), `largest_param` (name, max |w|), and
    `last_good` (the loss and gradient norm of the last good step, if given)."""
    bad_grads, good_grads, bad_params = [], [], []
    largest_name, largest = "", 0.0
    with torch.no_grad():
        for name, p in model.named_parameters():
            values = _local(p.detach())
            if values.numel() == 0:
                continue
            if not torch.isfinite(values).all():
                bad_params.append(name)
            else:
                top = float(values.abs().max())
                if top > largest:
                    largest_name, largest = name, top
            if p.grad is not None:
                g = _local(p.grad)
                if g.numel() and not torch.isfinite(g).all():
                    bad_grads.append(name)
                else:
                    good_grads.append(name)
    return {
        "loss_finite": math.isfinite(loss),
        "loss": _finite_or_none(loss),
        "grad_norm": _finite_or_none(grad_norm),
        "nonfinite_grads": {"count": len(bad_grads), "first": bad_grads[:SHOWN]},
        # backward runs from the loss: the first parameters (in module order) whose gradients stayed
        # finite point at the operation where the non-finite values began
        "finite_grads": {"count": len(good_grads), "first": good_grads[:SHOWN]},
        "nonfinite_params": {"count": len(bad_params), "first": bad_params[:SHOWN]},
        "largest_param": {"name": largest_name, "max_abs": largest},
        "last_good": last_good,
    }


def describe(report: dict) -> str:
    """One line for the console: what went non-finite and where."""
    parts = ["loss non-finite" if not report["loss_finite"] else f"loss {report['loss']:.4g}"]
    grads, params = report["nonfinite_grads"], report["nonfinite_params"]
    if grads["count"]:
        parts.append(f"{grads['count']} non-finite gradients (first {', '.join(grads['first'][:2])})")
        finite = report["finite_grads"]
        if finite["count"]:
            parts.append(f"{finite['count']} finite (first {', '.join(finite['first'][:2])})")
    if params["count"]:
        parts.append(f"{params['count']} non-finite weights (first {', '.join(params['first'][:2])})")
    largest = report["largest_param"]
    parts.append(f"largest weight {largest['max_abs']:.3g} in {largest['name']}")
    if report["last_good"]:
        good = report["last_good"]
        parts.append(f"last good step {good['step']}: loss {good['loss']:.4g}, grad norm {good['grad_norm']:.3g}")
    return "; ".join(parts)
