"""AdamW that updates row-sparse parameters lazily: only the rows their gradient touches.

The MoWE bank (`nn.word_experts.WordExpertBank(sparse_grad=True)`) has tens of thousands of
experts of which one batch touches a third; its gradient is a row-sparse COO tensor over the
touched experts. `RowSparseAdamW` is `torch.optim.AdamW` (fused on CUDA) for every other
parameter, and for a parameter marked `row_sparse_grad` it updates the touched rows only, as
TensorFlow's LazyAdam and `torch.optim.SparseAdam` do: the rows' moments, decoupled weight decay
and weight change as AdamW's would; rows not in the gradient keep their moments (they are not
decayed) and weights. Bias correction uses the parameter's own step count. A low-precision
parameter (a bf16 bank) gets float32 master weights in the optimizer state, so small updates are
not lost to rounding; the parameter holds their bf16 copy. On CUDA a row-sparse gradient's update
is one Triton kernel (`kernels.lazy_adamw`); elsewhere, and for dense gradients, torch ops.

`clip_grad_norm_` is `torch.nn.utils.clip_grad_norm_` for gradients that may be row-sparse (torch's
has no norm of a sparse tensor): the norm of a sparse gradient is that of its coalesced values.
"""

from __future__ import annotations

import torch

from frugalformers.kernels.lazy_adamw import lazy_adamw_rows_, lazy_kernel_applies


def is_row_sparse(p: torch.Tensor) -> bool:
    return bool(getattr(p, "row_sparse_grad", False))


class RowSparseAdamW(torch.optim.AdamW):
    """torch.optim.AdamW, with a lazy update for parameters marked `row_sparse_grad` (whose
    gradient may be row-sparse COO or dense: dense updates every row)."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        lazy = []
        for group in self.param_groups:
            for p in group["params"]:
                if is_row_sparse(p) and p.grad is not None:
                    lazy.append((group, p, p.grad))
                    p.grad = None  # AdamW's own step skips parameters without a gradient
        try:
            super().step()
        finally:
            for _, p, grad in lazy:
                p.grad = grad
        for group, p, grad in lazy:
            self._lazy_update(group, p, grad)
        return loss

    def _lazy_update(self, group: dict, p: torch.Tensor, grad: torch.Tensor) -> None:
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
            state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
            if p.dtype != torch.float32:
                state["master"] = p.detach().float()
        state["step"] += 1
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        if lazy_kernel_applies(p, grad):  # one Triton kernel over the touched rows, in place
            lazy_adamw_rows_(p, grad, m, v, state.get("master"), state["step"], lr, wd, beta1, beta2, eps)
            return
        w = state.get("master", p)
        rows = None
        if grad.is_sparse:
            grad = grad.float().coalesce()  # duplicate rows (several layers sharing the bank) summed in float32
            rows, values = grad.indices()[0], grad.values()
        else:
            values = grad.float()
        if rows is not None and rows.numel() == 0:
            return
        m_r, v_r, w_r = (t if rows is None else t.index_select(0, rows) for t in (m, v, w))  # w: float32
        bc1 = 1 - beta1 ** state["step"]
        bc2_sqrt = (1 - beta2 ** state["step"]).sqrt()
        w_r.mul_(1 - lr * wd)  # decoupled weight decay (AdamW), on the touched rows
        m_r.lerp_(values, 1 - beta1)
        v_r.mul_(beta2).addcmul_(values, values, value=1 - beta2)
        denom = (v_r.sqrt() / bc2_sqrt).add_(eps)
        w_r.add_(m_r / denom * (-lr / bc1))
        if rows is not None:  # (a dense gradient updated the state in place)
            m.index_copy_(0, rows, m_r)
            v.index_copy_(0, rows, v_r)
            w.index_copy_(0, rows, w_r)
        if "master" in state:  # the parameter holds the low-precision copy of its master rows
            if rows is None:
                p.copy_(w)
            else:
                p.index_copy_(0, rows, w_r.to(p.dtype))

    def load_state_dict(self, state_dict: dict) -> None:
        """As torch's, except that the lazy parameters keep their float32 state (torch casts every
        state tensor to its parameter's dtype: a bf16 bank would lose its master weights)."""
        params = [p for g in self.param_groups for p in g["params"]]
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        keep = {}
        for i, p in zip(ids, params, strict=True):
            saved = state_dict["state"].get(i)
            if saved is not None and is_row_sparse(p):
                keep[p] = {k: v for k, v in saved.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
        super().load_state_dict(state_dict)
        for p, entries in keep.items():
            for k, v in entries.items():
                self.state[p][k] = v.to(device=p.device, dtype=torch.float32)


def clip_grad_norm_(parameters, max_norm: float) -> torch.Tensor:
    """Scale the gradients of `parameters` (dense or row-sparse) so that their total 2-norm is at
    most `max_norm`; return the norm before scaling (float32). Sparse gradients are coalesced in
    place (duplicate rows summed: the norm is that of the gradient, not of its pieces)."""
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return torch.zeros(())
    norms = []
    for p in params:
        if p.grad.is_sparse:
            p.grad = p.grad.coalesce()
            norms.append(torch.linalg.vector_norm(p.grad.values().float()))
        else:
            norms.append(torch.linalg.vector_norm(p.grad.float()))
    total = torch.linalg.vector_norm(torch.stack(norms))
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for p in params:
        (p.grad.values() if p.grad.is_sparse else p.grad).mul_(coef.to(p.grad.dtype))
    return total
