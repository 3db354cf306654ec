"""Does SDPA's default backend return NaN gradients on this GPU where pytorch/pytorch#196678 says,
and does `nn.attention.sdpa` avoid it? Masked attention with key lengths around 1,088 (the
colt5-small-short fine-tuning's 1,024 + 64 input), every query row's logsumexp below -88.7 (as
T5's unscaled logits can make it), bf16; then one T5 cross-attention layer (`nn.Attention`) the
same way. Prints the non-finite grad_q / grad_k / grad_v counts per key length.

    PYTHONPATH=src python benchmarks/cudnn_sdpa_check.py
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from frugalformers.nn.attention import Attention, sdpa


def grads(fn, q, k, v, mask) -> tuple[int, int, int]:
    """Non-finite elements of (grad_q, grad_k, grad_v) after one backward through fn."""
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v, attn_mask=mask)
    out.backward(torch.ones_like(out))
    return tuple(int((~torch.isfinite(t.grad)).sum()) for t in (q, k, v))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 1088, 1152, 4160])
    args = ap.parse_args()
    torch.manual_seed(0)
    dev, dt, D = "cuda", torch.bfloat16, 64
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    print(
        "| key length | F.scaled_dot_product_attention: NaN in grad q / k / v | nn.attention.sdpa "
        "| T5 cross-attention layer (grad of its input, q weight) |"
    )
    print("|---|---|---|---|")
    for n in args.lengths:
        q = torch.randn(2, 6, 8, D, device=dev, dtype=dt) * 0.1
        k = torch.randn(2, 6, n, D, device=dev, dtype=dt) * 0.1
        v = torch.randn(2, 6, n, D, device=dev, dtype=dt)
        q[..., 0], k[..., 0] = 1.0, -120.0  # every logit ~ -120: each row's logsumexp < -88.7
        mask = torch.zeros(2, 1, 8, n, device=dev, dtype=dt)
        mask[1, ..., n - 40 :] = float("-inf")  # key padding in the second example
        plain = grads(F.scaled_dot_product_attention, q, k, v, mask)
        ours = grads(sdpa, q, k, v, mask)
        layer = Attention(384, 6, head_dim=D, scale=1.0).to(dev)
        with torch.no_grad():
            layer.q.weight.mul_(30.0)  # large unscaled logits, as a T5 model's can grow
        x = torch.randn(2, 8, 384, device=dev, requires_grad=True)
        ctx = torch.randn(2, n, 384, device=dev)
        pad = torch.ones(2, n, dtype=torch.bool, device=dev)
        pad[1, n - 40 :] = False
        with torch.autocast("cuda", dtype=dt):
            y = layer(x, ctx, key_padding_mask=pad)
        y.float().square().mean().backward()
        bad_layer = (int((~torch.isfinite(x.grad)).sum()), int((~torch.isfinite(layer.q.weight.grad)).sum()))
        print(f"| {n:,} | {plain} | {ours} | {bad_layer} |")


if __name__ == "__main__":
    main()
