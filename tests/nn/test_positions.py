"""RelativePositionBias looked up per offset equals the direct per-pair bucket lookup."""

import pytest
import torch

from frugalformers.nn.positions import RelativePositionBias, relative_position_bucket


@pytest.mark.parametrize("bidirectional", [True, False])
def test_bias_by_offset_equals_the_direct_bucket_lookup(bidirectional):
    table = RelativePositionBias(4, 32, 64, bidirectional)
    rel = torch.randint(-300, 300, (5, 7))  # far beyond max_distance (64) and the span given (80)
    direct = table.weight[relative_position_bucket(rel, bidirectional, 32, 64)]
    assert torch.equal(table.by_offset(rel, 80), direct)
    assert torch.equal(table.by_offset(rel), direct)
    q, k = 6, 9
    full = table(q, k, q_offset=2)  # (1, H, q, k)
    rel2 = torch.arange(k)[None, :] - (torch.arange(q) + 2)[:, None]
    assert torch.equal(full[0].permute(1, 2, 0), table.weight[relative_position_bucket(rel2, bidirectional, 32, 64)])
