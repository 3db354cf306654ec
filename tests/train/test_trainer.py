import json

import pytest
import torch

from frugalformers.checkpoint import CheckpointError
from frugalformers.train import checkpointing
from frugalformers.train.config import load_run_config
from frugalformers.train.logger import read_metrics
from frugalformers.train.run import pretrain
from frugalformers.train.schedule import lr_factor
from frugalformers.train.trainer import TrainingStopped

SMALL = [
    "data.batch_size=4",
    "data.seq_len=32",
    "log_every=1",
    "eval_every=0",
    "eval_batches=2",
    "optim.warmup_steps=3",
    "model.dropout=0.1",
]


def cfg_for(tmp_path, name, steps, *extra, preset="bert-tiny"):
    return load_run_config(preset, None, [f"steps={steps}", f"out={tmp_path / name}", *SMALL, *extra])


def losses(run):
    return {r["step"]: r["loss"] for r in read_metrics(run) if "loss" in r}


class Interrupt(Exception):
    pass


def test_resume_reproduces_the_uninterrupted_losses_exactly(tmp_path, demo_data, monkeypatch):
    full = cfg_for(tmp_path, "full", 12, "save_every=5")
    pretrain(full, progress=False, log=lambda *_: None)
    part = cfg_for(tmp_path, "part", 12, "save_every=5")
    from frugalformers.train import batches as batches_mod

    real = batches_mod.PretrainBatches.next_batch
    calls = {"n": 0}

    def dying(self):
        calls["n"] += 1
        if calls["n"] == 8:  # after the step-5 checkpoint, mid-run
            raise Interrupt()
        return real(self)

    monkeypatch.setattr(batches_mod.PretrainBatches, "next_batch", dying)
    with pytest.raises(Interrupt):
        pretrain(part, progress=False, log=lambda *_: None)
    monkeypatch.setattr(batches_mod.PretrainBatches, "next_batch", real)
    pretrain(part, resume=True, progress=False, log=lambda *_: None)
    a, b = losses(tmp_path / "full"), losses(tmp_path / "part")
    assert sorted(a) == sorted(b) == list(range(1, 13))
    assert all(a[s] == b[s] for s in a), {s: (a[s], b[s]) for s in a if a[s] != b[s]}


def test_kill_during_checkpoint_write_keeps_the_last_one(tmp_path, demo_data, monkeypatch):
    cfg = cfg_for(tmp_path, "run", 4, "save_every=2", "keep_last=3")
    real_save = torch.save
    state = {"n": 0}

    def dying_save(obj, path, *a, **k):
        state["n"] += 1
        if state["n"] == 2:  # the second checkpoint dies half-way
            open(path, "wb").write(b"partial")
            raise Interrupt()
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(checkpointing.torch, "save", dying_save)
    with pytest.raises(Interrupt):
        pretrain(cfg, progress=False, log=lambda *_: None)
    ckpts = checkpointing.list_checkpoints(tmp_path / "run")
    assert [p.name for p in ckpts] == ["step-00000002"]
    assert not [p for p in (tmp_path / "run/checkpoints").iterdir() if p.name.startswith(".")]
    monkeypatch.setattr(checkpointing.torch, "save", real_save)
    pretrain(cfg, resume=True, progress=False, log=lambda *_: None)
    assert [p.name for p in checkpointing.list_checkpoints(tmp_path / "run")] == ["step-00000002", "step-00000004"]


def test_corrupt_checkpoint_falls_back_to_the_previous(tmp_path, demo_data):
    cfg = cfg_for(tmp_path, "run", 4, "save_every=2", "keep_last=3")
    pretrain(cfg, progress=False, log=lambda *_: None)
    newest = checkpointing.list_checkpoints(tmp_path / "run")[-1]
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    messages = []
    from frugalformers.api import build_model

    state = checkpointing.resume_latest(tmp_path / "run", build_model("bert-tiny"), messages.append)
    assert state["step"] == 2 and "step-00000004" in messages[0] and "truncated or corrupt" in messages[0]
    with pytest.raises(CheckpointError):
        checkpointing.load_checkpoint(newest, build_model("bert-tiny"))


def test_nonfinite_steps_are_skipped_then_training_stops(tmp_path, demo_data, monkeypatch):
    from frugalformers.models import encoder

    real = encoder.BertForMaskedLM.forward
    calls = {"n": 0}

    def sometimes_nan(self, *a, **k):
        out = real(self, *a, **k)
        calls["n"] += 1
        if calls["n"] in (3, 4):
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(encoder.BertForMaskedLM, "forward", sometimes_nan)
    cfg = cfg_for(tmp_path, "run", 6, "save_every=0")
    result = pretrain(cfg, progress=False, log=lambda *_: None)
    assert result["bad_steps"] == 2 and result["step"] == 6
    recs = read_metrics(tmp_path / "run")
    assert sum(r.get("skipped_nonfinite", 0) for r in recs) == 2

    def always_nan(self, *a, **k):
        out = real(self, *a, **k)
        out.loss = out.loss * float("inf")
        return out

    monkeypatch.setattr(encoder.BertForMaskedLM, "forward", always_nan)
    cfg = cfg_for(tmp_path, "run2", 20, "save_every=0", "max_bad_steps=3")
    with pytest.raises(TrainingStopped, match="3 consecutive steps"):
        pretrain(cfg, progress=False, log=lambda *_: None)


def test_schedules():
    assert lr_factor(0, 10, 100, "linear") == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, "linear") == pytest.approx(1.0)
    assert lr_factor(55, 10, 100, "linear") == pytest.approx(0.5)
    assert lr_factor(55, 10, 100, "cosine") == pytest.approx(0.5)
    assert lr_factor(39, 10, 100, "inverse_sqrt") == pytest.approx(0.5)
    assert lr_factor(99, 10, 100, "constant") == 1.0


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", "optim.lrr"),
        ("stepz=5", "stepz"),
        ("steps=abc", "steps"),
        ("model.n_layerz=3", "n_layerz"),
        ("objective=foo", "objective='foo'"),
        ("data.batch_size=0", "data.batch_size=0"),
    ],
)
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ValueError, match=message):
        load_run_config("bert-tiny", None, [override])


def test_yaml_then_overrides(tmp_path):
    y = tmp_path / "run.yaml"
    y.write_text("preset: fnet-tiny\nsteps: 7\noptim:\n  lr: 0.5\n")
    cfg = load_run_config(None, str(y), ["optim.lr=0.25"])
    assert (cfg.preset, cfg.steps, cfg.optim.lr) == ("fnet-tiny", 7, 0.25)


def test_resolved_config_is_saved(tmp_path, demo_data):
    cfg = cfg_for(tmp_path, "run", 2, "save_every=0")
    pretrain(cfg, progress=False, log=lambda *_: None)
    text = (tmp_path / "run/config.yaml").read_text()
    assert "preset: bert-tiny" in text and "steps: 2" in text
    assert json.loads((tmp_path / "run/metrics.jsonl").read_text().splitlines()[0])["step"] == 1


def test_early_stopping_and_keep_last(tmp_path, demo_data, monkeypatch):
    from frugalformers.train import run as run_mod

    def flat_eval(batches, n):
        return lambda model: {"loss": 1.0}  # never improves after the first evaluation

    monkeypatch.setattr(run_mod, "pretrain_eval", flat_eval)
    cfg = cfg_for(
        tmp_path,
        "run",
        50,
        "eval_every=2",
        "save_every=2",
        "keep_last=2",
        "early_stop_metric=valid_loss",
        "early_stop_patience=2",
    )
    result = pretrain(cfg, progress=False, log=lambda *_: None)
    assert result["step"] == 6  # evaluations at 2 (best), 4, 6 (two without improvement)
    assert [p.name for p in checkpointing.list_checkpoints(tmp_path / "run")] == ["step-00000004", "step-00000006"]


def test_aux_losses_are_added_and_logged_separately(tmp_path, demo_data):
    import torch.nn as nn

    from frugalformers.models import recipe
    from frugalformers.nn.ffn import FeedForward

    class AuxFFN(FeedForward):
        def forward(self, x):
            y = super().forward(x)
            return y, {"balance": y.pow(2).mean() * 0 + 0.5, "z": y.abs().mean() * 0 + 0.25}

    @recipe.register_ffn("aux_test")
    def _aux(config, i, stack) -> nn.Module:
        return AuxFFN(config.d_model, config.d_ff, config.activation)

    try:
        cfg = cfg_for(tmp_path, "run", 2, "save_every=0", "model.ffn=aux_test", "aux_loss_weight=0.1")
        pretrain(cfg, progress=False, log=lambda *_: None)
    finally:
        recipe.FFNS.pop("aux_test")
    rec = [r for r in read_metrics(tmp_path / "run") if "loss" in r][-1]
    assert rec["aux/balance"] == pytest.approx(1.0) and rec["aux/z"] == pytest.approx(0.5)  # summed over 2 layers


def test_free_text_tasks_train_generative_models_only(tmp_path, demo_data):
    import shutil

    from frugalformers.train.run import finetune

    ds = tmp_path / "qa-data"  # a dataset folder with one free-text task, the demo tokenizer
    shutil.copytree(demo_data / "tokenizer", ds / "tokenizer")
    rows = [{"text": f"What is the capital of country {i}?", "label": f"city {i % 7}"} for i in range(40)]
    (ds / "tasks/qa").mkdir(parents=True)
    (ds / "tasks/qa/task.json").write_text(json.dumps({"labels": [], "metric": "em_f1"}))
    for split in ("train", "validation", "test"):
        (ds / f"tasks/qa/{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = [
        f"data.dataset={ds}",
        "data.task=qa",
        "data.batch_size=8",
        "data.seq_len=32",
        "data.target_len=8",
        "eval_batches=1",
    ]
    with pytest.raises(ValueError, match="generative model"):
        finetune(
            load_run_config("bert-tiny", None, [*common, f"out={tmp_path / 'a'}"]), progress=False, log=lambda *_: None
        )
    result = finetune(
        load_run_config("t5-tiny", None, [*common, "steps=2", f"out={tmp_path / 'b'}"]),
        progress=False,
        log=lambda *_: None,
    )
    assert set(result["test"]) == {"em", "f1", "answer_loss", "answer_loss_other_input"}
    assert 0 < result["test"]["answer_loss"] < 20 and 0 < result["test"]["answer_loss_other_input"] < 20
    assert "valid_answer_loss" in result and "valid_answer_loss_other_input" in result
