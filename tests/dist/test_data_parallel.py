"""DDP and FSDP2 on 2 CPU processes (gloo) follow one process's loss trajectory on the same global
batch; their checkpoints load and resume in one process."""

import pytest
import torch

from frugalformers.checkpoint import load
from frugalformers.dist.spawn import run_on_ranks
from frugalformers.train import checkpointing
from frugalformers.train.config import load_run_config
from frugalformers.train.logger import read_metrics
from frugalformers.train.run import pretrain

BASE = [
    "data.batch_size=8",
    "data.seq_len=32",
    "log_every=1",
    "eval_every=0",
    "eval_batches=1",
    "optim.warmup_steps=2",
    "model.dropout=0.0",
    "model.attention_dropout=0.0",
    "device=cpu",
]


def config(out, steps, *extra, preset="bert-tiny"):
    return load_run_config(preset, None, [f"steps={steps}", f"out={out}", *BASE, *extra])


def _train(out, steps, extra, preset):
    torch.set_num_threads(1)
    return pretrain(config(out, steps, *extra, preset=preset), progress=False, log=lambda *_: None)


def losses(run):
    return {r["step"]: r["loss"] for r in read_metrics(run) if "loss" in r}


@pytest.mark.parametrize(
    "preset,mode",
    [("bert-tiny", "ddp"), ("bert-tiny", "fsdp"), ("llama-tiny", "ddp"), ("t5-tiny", "fsdp")],
)
def test_two_ranks_follow_the_single_process_trajectory(tmp_path, demo_data, preset, mode):
    torch.set_num_threads(1)
    _train(tmp_path / "one", 4, ["save_every=2"], preset)
    run_on_ranks(_train, 2, tmp_path / "two", 4, [f"parallel={mode}", "save_every=2"], preset)
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    for s in one:
        assert two[s] == pytest.approx(one[s], rel=2e-5, abs=1e-6), (s, one[s], two[s])
    # the 2-rank checkpoint holds full tensors: it loads in one process and equals the 1-process weights
    a = load(checkpointing.list_checkpoints(tmp_path / "one")[-1]).state_dict()
    b = load(checkpointing.list_checkpoints(tmp_path / "two")[-1]).state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)


def test_resume_on_another_world_size_continues_the_same_run(tmp_path, demo_data):
    """2 ranks train 4 steps (checkpoint at 4); one process resumes to 6: same losses as 6 steps on one.
    (A constant schedule after warm-up, so that stopping at 4 does not change the learning rates.)"""
    torch.set_num_threads(1)
    extra = ["save_every=2", "optim.schedule=constant"]
    _train(tmp_path / "ref", 6, extra, "bert-tiny")
    run_on_ranks(_train, 2, tmp_path / "moved", 4, extra, "bert-tiny")
    pretrain(config(tmp_path / "moved", 6, *extra), resume=True, progress=False, log=lambda *_: None)
    ref, moved = losses(tmp_path / "ref"), losses(tmp_path / "moved")
    assert sorted(moved) == list(range(1, 7))
    for s in ref:
        assert moved[s] == pytest.approx(ref[s], rel=1e-4), (s, ref[s], moved[s])


def test_global_batch_must_split_over_the_ranks(tmp_path, demo_data):
    from frugalformers.dist.data_parallel import RankSlice
    from frugalformers.dist.env import DistEnv

    class Source:
        batch_size = 6

    with pytest.raises(ValueError, match="batch_size=6.*multiple of 4"):
        RankSlice(Source(), DistEnv(rank=0, world_size=4))


def test_nproc_shortcut_builds_the_torchrun_command():
    from frugalformers.dist.launch import torchrun_argv

    cmd = torchrun_argv(2, ["train", "--preset", "bert-tiny", "--nproc", "2", "steps=3"])
    assert cmd[1:] == [
        "-m", "torch.distributed.run", "--standalone", "--local-addr=127.0.0.1", "--nproc-per-node=2",
        "-m", "frugalformers.cli", "train", "--preset", "bert-tiny", "steps=3",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="--nproc=0"):
        torchrun_argv(0, [])


@pytest.mark.parametrize("preset,extra", [("sparse-mixer-tiny", ["data.seq_len=128", "model.options.expert_dropout=0.0"]), ("mowe-tiny", [])])
def test_expert_parallel_training_equals_ddp(tmp_path, demo_data, preset, extra):
    """Same 2 ranks, same local routing groups: sharded experts train exactly like replicated ones,
    and the expert-parallel checkpoint (experts gathered) loads in one process. (Expert dropout off:
    its masks follow the row order, which differs when rows travel.)"""
    torch.set_num_threads(1)
    extra = [*extra, "save_every=3", "data.batch_size=4"]
    run_on_ranks(_train, 2, tmp_path / "ddp", 3, extra, preset)
    run_on_ranks(_train, 2, tmp_path / "ep", 3, [*extra, "expert_parallel=true"], preset)
    ddp, ep = losses(tmp_path / "ddp"), losses(tmp_path / "ep")
    assert sorted(ep) == [1, 2, 3]
    for s in ddp:
        assert ep[s] == pytest.approx(ddp[s], rel=2e-5), (s, ddp[s], ep[s])
    a = load(checkpointing.list_checkpoints(tmp_path / "ddp")[-1]).state_dict()
    b = load(checkpointing.list_checkpoints(tmp_path / "ep")[-1]).state_dict()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)


def _finetune(out, extra):
    from frugalformers.train.run import finetune

    torch.set_num_threads(1)
    cfg = load_run_config(
        "t5-tiny",
        None,
        [f"out={out}", "steps=3", "data.task=sentiment", "data.batch_size=4", "data.seq_len=48", "data.target_len=6",
         "eval_batches=1", "eval_every=0", "log_every=1", "model.dropout=0.0", "device=cpu", *extra],
    )  # fmt: skip
    return finetune(cfg, progress=False, log=lambda *_: None)


def test_fsdp_finetune_with_generation_matches_one_process(tmp_path, demo_data):
    """Text-to-text fine-tuning: FSDP2 training, then evaluation by generation (which calls the
    encoder and cross-attention projections outside forward) on full parameters."""
    one = _finetune(tmp_path / "one", [])
    two = run_on_ranks(_finetune, 2, tmp_path / "two", ["parallel=fsdp"])
    assert two[0]["test"] == two[1]["test"] == one["test"]
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(a) == sorted(b) == [1, 2, 3]
    for s in a:
        assert b[s] == pytest.approx(a[s], rel=2e-5), (s, a[s], b[s])
