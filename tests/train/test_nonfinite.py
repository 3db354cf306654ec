import torch
from torch import nn

from frugalformers.train.nonfinite import clip_finite_grads, describe, nonfinite_report


def model_with_grads(bad: float | None = None) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    model(torch.randn(5, 4)).pow(2).sum().backward()
    if bad is not None:
        model[1].weight.grad[0, 1] = bad
    return model


def test_clip_finite_grads_clips_as_torch_does_when_finite():
    ours, theirs = model_with_grads(), model_with_grads()
    norm = clip_finite_grads(ours, 0.1)
    ref = torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.1)
    assert torch.allclose(norm, ref)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad)
    assert sum(p.grad.pow(2).sum() for p in ours.parameters()).sqrt() < 0.1 + 1e-6


def test_a_non_finite_gradient_is_left_alone_and_named():
    model = model_with_grads(float("inf"))
    before = [p.grad.clone() for p in model.parameters()]
    norm = clip_finite_grads(model, 0.1)
    assert not torch.isfinite(norm)
    for p, g in zip(model.parameters(), before, strict=True):  # torch's clip would make them all NaN
        assert torch.equal(p.grad, g)
    model[0].bias.data[1] = float("nan")
    report = nonfinite_report(model, 2.5, float(norm), {"step": 7, "loss": 2.4, "grad_norm": 0.8})
    assert report["loss_finite"] and report["loss"] == 2.5 and report["grad_norm"] is None
    assert report["nonfinite_grads"] == {"count": 1, "first": ["1.weight"]}
    assert report["finite_grads"] == {"count": 3, "first": ["0.weight", "0.bias", "1.bias"]}
    assert report["nonfinite_params"] == {"count": 1, "first": ["0.bias"]}
    biggest = max((p.abs().max().item(), n) for n, p in model.named_parameters() if n != "0.bias")
    assert report["largest_param"] == {"name": biggest[1], "max_abs": biggest[0]}
    line = describe(report)
    assert "1 non-finite gradients (first 1.weight); 3 finite (first 0.weight, 0.bias)" in line
    assert "last good step 7" in line
