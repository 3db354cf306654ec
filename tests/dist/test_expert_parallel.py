"""Expert parallelism on 2 CPU ranks (gloo): each rank's output and gradients equal the
single-process layer on the same tokens, for every routing and for the MoWE bank."""

import copy

import pytest
import torch

from frugalformers.dist.spawn import run_on_ranks


def _moe(routing):
    from frugalformers.nn.moe import MoEFeedForward

    torch.manual_seed(0)
    return MoEFeedForward(16, 24, n_experts=4, routing=routing, top_k=2 if routing != "experts_choose" else 1,
                          capacity_factor=1.0, max_group_size=12, expert_dropout=0.0)  # fmt: skip


def _inputs(rank):
    g = torch.Generator().manual_seed(100 + rank)
    return torch.randn(2, 12, 16, generator=g), torch.randn(2, 12, 16, generator=g)


def _grads(layer, x, g):
    x = x.clone().requires_grad_(True)
    y, aux = layer(x)
    ((y * g).sum() + sum(aux.values())).backward()
    return y.detach(), x.grad, {n: p.grad.clone() for n, p in layer.named_parameters()}


def _moe_worker(routing):
    import torch.distributed as dist

    from frugalformers.dist.expert_parallel import shard_experts

    rank = dist.get_rank()
    full = _moe(routing)
    ref = [_grads(copy.deepcopy(full), *_inputs(r)) for r in range(2)]  # both ranks' tokens, one process
    layer = copy.deepcopy(full)
    names = shard_experts(layer)
    y, gx, gp = _grads(layer, *_inputs(rank))
    return {"y": y, "ref_y": ref[rank][0], "gx": gx, "ref_gx": ref[rank][1], "gp": gp,
            "ref_gp": {n: ref[0][2][n] + ref[1][2][n] for n in gp}, "names": names, "first": layer.ep.first}  # fmt: skip


@pytest.mark.parametrize("routing", ["experts_choose", "tokens_choose", "dropless"])
def test_moe_expert_parallel_equals_single_process(routing):
    for r in run_on_ranks(_moe_worker, 2, routing):
        torch.testing.assert_close(r["y"], r["ref_y"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r["gx"], r["ref_gx"], rtol=1e-5, atol=1e-6)
        assert set(r["names"]) == {"w_in", "w_out", "b_in", "b_out"}
        for n, g in r["gp"].items():
            want = r["ref_gp"][n]
            if n in r["names"]:  # this rank's 2 experts: gradient summed over both ranks' tokens
                want = want[r["first"] : r["first"] + 2]
            else:  # the replicated router: this rank's share (data parallelism adds the other)
                continue
            torch.testing.assert_close(g, want, rtol=1e-5, atol=1e-6, msg=n)


def _mowe_worker(amp=False):
    import contextlib

    import torch.distributed as dist

    from frugalformers.dist.expert_parallel import shard_experts
    from frugalformers.models.recipe import MixContext
    from frugalformers.nn.word_experts import WordExpertBank, WordExperts

    rank = dist.get_rank()
    torch.manual_seed(0)
    bank = WordExpertBank(8, 16, 4)
    model = torch.nn.ModuleDict({"a": WordExperts(bank, skip_top=3), "b": WordExperts(bank, skip_top=3)})

    def run(m, r):
        g = torch.Generator().manual_seed(7 + r)
        x = torch.randn(2, 10, 16, generator=g, requires_grad=True)
        ids = torch.randint(0, 40, (2, 10), generator=g)
        ctx = MixContext(extras={"word_ids": ids})
        with torch.autocast("cpu", dtype=torch.bfloat16) if amp else contextlib.nullcontext():
            y = m["b"](m["a"](x, ctx) + x, ctx)  # the shared bank used twice (rows travel in bf16 under amp)
        (y * torch.randn(y.shape, generator=g)).sum().backward()
        return y.detach(), x.grad, m["a"].bank.w_in.grad.clone()

    ref = [run(copy.deepcopy(model), r) for r in range(2)]
    names = shard_experts(model)
    y, gx, gw = run(model, rank)
    return {"y": y, "gx": gx, "gw": gw, "ref": ref[rank], "ref_gw": ref[0][2] + ref[1][2], "names": names}


@pytest.mark.parametrize("amp", [False, True])
def test_mowe_bank_expert_parallel_equals_single_process(amp):
    tol = {"rtol": 2e-2, "atol": 2e-2} if amp else {"rtol": 1e-5, "atol": 1e-6}
    for rank, r in enumerate(run_on_ranks(_mowe_worker, 2, amp)):
        assert r["names"] == ["a.bank.w_in", "a.bank.w_out"]  # the shared bank is sharded once
        torch.testing.assert_close(r["y"], r["ref"][0], **tol)
        torch.testing.assert_close(r["gx"], r["ref"][1], **tol)
        torch.testing.assert_close(r["gw"], r["ref_gw"][rank * 4 : rank * 4 + 4], **tol)


def _bad_split_worker():
    from frugalformers.dist.expert_parallel import ExpertParallel

    try:
        ExpertParallel(5)
    except ValueError as e:
        return str(e)
    return None


def test_experts_must_divide_over_the_ranks():
    msgs = run_on_ranks(_bad_split_worker, 2)
    assert all(m and "n_experts=5" in m and "divisible" in m for m in msgs)
