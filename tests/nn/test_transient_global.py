"""LongT5 transient-global attention: block ids, aggregates, fast path vs reference (HF parity is
in tests/convert/test_hf_parity.py)."""

import torch

from frugalformers import build_model
from frugalformers.nn.transient_global import global_aggregates, global_block_ids


def test_block_ids_put_orphans_in_the_previous_block_and_skip_padding():
    valid = torch.tensor([[True] * 10, [True] * 5 + [False] * 5])
    ids, segment = global_block_ids(valid, 4)
    assert ids.tolist() == [[0, 0, 0, 0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, -1, -1, -1, -1, -1]]
    assert segment.tolist() == [[True, True], [True, False]]
    x = torch.arange(10.0)[None, :, None].expand(2, 10, 1)
    agg = global_aggregates(x, ids, 2)
    assert agg[:, :, 0].tolist() == [[6.0, 39.0], [10.0, 0.0]]


def test_fast_path_equals_reference_forward_and_backward_with_padding():
    torch.manual_seed(0)
    fast = build_model("longt5-tiny", head="encoder").eval()  # no dropout
    ref = build_model(fast.config.replace(attention_impl="reference")).eval()
    ref.load_state_dict(fast.state_dict())
    ids = torch.randint(5, 200, (2, 90))
    mask = torch.ones(2, 90, dtype=torch.long)
    mask[1, 57:] = 0
    a, b = fast(ids, attention_mask=mask).hidden, ref(ids, attention_mask=mask).hidden
    real = mask.bool()
    torch.testing.assert_close(a[real], b[real], rtol=1e-5, atol=1e-5)
    a[real].sum().backward()
    b[real].sum().backward()
    for (n, p), q in zip(fast.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6 * float(q.grad.abs().max()), msg=n)


def test_runs_under_bf16_autocast():
    model = build_model("longt5-tiny", head="encoder")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randint(5, 200, (1, 70))).hidden
    assert torch.isfinite(out).all()
