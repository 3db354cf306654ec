"""`frugal compare`: the tiny FNet / Sparse Mixer recipe end to end on the CPU, cut off by kill -9
and resumed without training a finished cell again; recipe and run-folder errors."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from frugalformers.compare import RecipeError, load_recipe, run_compare
from frugalformers.compare.plan import plan
from frugalformers.compare.recipe import recipe_from_dict
from frugalformers.data.store import dataset_folder

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "recipes" / "fnet-tiny.yaml"
SRC = str(ROOT / "src")


def _results(out: Path) -> dict[str, float]:
    return {
        str(p.parent.relative_to(out / "cells")): p.stat().st_mtime_ns for p in (out / "cells").rglob("result.json")
    }


def test_fnet_tiny_runs_is_killed_and_resumes_without_retraining(tmp_path, demo_data):
    out = tmp_path / "cmp"
    cmd = [sys.executable, "-m", "frugalformers.cli", "compare", str(TINY), "--out", str(out), "--workers", "2"]
    env = {**os.environ, "PYTHONPATH": SRC}
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while len(_results(out)) < 14 if out.exists() else True:  # pretraining done and a few fine-tunings
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _results(out)
    assert 14 <= len(before) < 37  # 1 unigram + 6 pretrain + 24 fine-tuning + 6 speed cells
    r = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert f"{len(before)} already done" in r.stdout
    after = _results(out)
    assert len(after) == 37 and all(after[k] == t for k, t in before.items())  # no finished cell ran again
    assert time.time() - t0 < 60

    md = (out / "compare.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| model |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns == [
        "model", "params", "pretrain tokens", "MLM loss", "MLM acc", "sentiment (accuracy)", "topic (accuracy)",
        "average", "% of bert-tiny", "train speed", "inference speed", "verdict",
    ]  # fmt: skip
    for name in ("bert-tiny", "fnet-tiny", "fnet-hybrid-tiny", "linear-tiny", "sparse-mixer-tiny", "majority class"):
        assert f"| {name} |" in md
    data = json.loads((out / "compare.json").read_text())
    rows = {r["label"]: r for r in data["rows"]}
    for label, row in rows.items():  # every model's held-out MLM loss fell, every task has 2 seeds
        assert row["pretrain_loss"] < row["pretrain_loss_start"], label
        assert all(t["n"] == 2 for t in row["tasks"].values())
        assert row["train_tokens_per_s"] > 0 and row["average"] is not None
    assert rows["bert-tiny"]["percent_of_reference"] == pytest.approx(100.0)
    assert (out / "compare.png").exists()


# one fine-tuning cell of 2 steps (the defaults fine-tune 3 epochs, up to 1,000 steps)
ONE_SHORT_FINETUNE = {
    "dataset": "demo",
    "tasks": ["sentiment"],
    "seeds": [0],
    "min_steps": 2,
    "max_steps": 2,
    "run": {"eval_batches": 2},
}


def _recipe(**over):
    base = {
        "models": ["bert-tiny", "fnet-tiny"],
        "pretrain": {"steps": 2, "data": {"dataset": "demo"}},
        "finetune": {"dataset": "demo", "tasks": ["sentiment"]},
    }
    return {**base, **over}


@pytest.mark.parametrize(
    "over, message",
    [
        ({"models": ["bert-tiny", "fnet-tni"]}, "unknown preset 'fnet-tni'; did you mean"),
        ({"finetune": {"dataset": "demo", "tasks": ["sentimnet"]}}, "unknown task 'sentimnet' in dataset 'demo'"),
        ({"finetune": {"dataset": "nope", "tasks": ["x"]}}, "finetune.dataset='nope' is neither a dataset"),
        ({"pretrian": {}}, "unknown key 'pretrian'; did you mean"),
        ({"pretrain": {"optim": {"lrr": 1}}}, "optim.lrr"),
        ({"reference": "bert-base"}, "reference='bert-base' is not one of the models"),
        ({"models": ["bert-tiny", "bert-tiny"]}, "appear twice"),
        ({"study": "uptrain", "models": ["llama-tiny-mqa"], "uptrain": {"kv_heads": [1]}}, "fewer than the model's"),
        ({"mix": {"add": "knowledge", "times": 4}}, "mix needs `add`, `into` and `times`"),
        ({"mix": {"add": "knowledge", "into": "demo", "times": 4, "tims": 2}}, "unknown key 'tims'"),
        ({"mix": {"add": "knowledge", "into": "demo", "times": 4}}, "pretrain on it with .*dataset: knowledge"),
    ],
)
def test_recipe_errors_name_the_problem(over, message, demo_data):
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(_recipe(**over), "r.yaml")


def test_a_folder_is_never_mixed(tmp_path, demo_data):
    path = tmp_path / "r.yaml"
    path.write_text("models: [bert-tiny]\nfinetune: {dataset: demo, tasks: [sentiment]}\npretrain: {steps: 2}\n")
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")
    other = tmp_path / "used"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RecipeError, match="is not a comparison's folder"):
        run_compare(str(path), str(other))
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "recipe.yaml").write_text(path.read_text())
    with pytest.raises(RecipeError, match="already holds a comparison; add --resume"):
        run_compare(str(path), str(out))
    path.write_text(path.read_text().replace("steps: 2", "steps: 3"))
    with pytest.raises(RecipeError, match=r"differs from the recipe .* \(keys \['pretrain'\]\)"):
        run_compare(str(path), str(out), resume=True)
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [bert-tiny\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)


def test_a_second_run_into_the_same_folder_is_refused(tmp_path, demo_data):
    from frugalformers.compare.runner import folder_lock

    path = tmp_path / "r.yaml"
    path.write_text("models: [bert-tiny]\nfinetune: {dataset: demo, tasks: [sentiment]}\npretrain: {steps: 2}\n")
    out = tmp_path / "cmp"
    with folder_lock(out / ".lock", str(out)):  # as a running `frugal compare` holds it
        with pytest.raises(RecipeError, match=rf"in use by another process \(pid {os.getpid()}\)"):
            run_compare(str(path), str(out))


def test_gqa_tiny_converts_uptrains_and_times_the_decode_step(tmp_path, demo_data):
    """recipes/gqa-tiny.yaml: the multi-head model pretrained once, each conversion scored before
    and after uptraining, the decode step of each kv-head count timed; one table."""
    t0 = time.time()
    out = run_compare(str(ROOT / "recipes" / "gqa-tiny.yaml"), str(tmp_path / "gqa"), workers=2, log=lambda _: None)
    assert time.time() - t0 < 60
    data = json.loads((out / "compare.json").read_text())
    rows = {r["variant"]: r for r in data["rows"]}
    assert set(rows) == {"mha", *(f"{v}-{m}" for v in ("gqa2", "mqa") for m in ("mean", "first", "random"))}
    for name, row in rows.items():
        assert all(loss is not None and loss > 0 for loss in row["loss"].values()), name
        assert row["ms_per_step"] > 0
        if name != "mha":  # uptraining lowered every converted model's held-out loss
            assert row["loss"]["0.5"] < row["loss"]["0"], name
    assert rows["mqa-mean"]["kv_heads"] == 1 and rows["gqa2-mean"]["kv_heads"] == 2
    md = (out / "compare.md").read_text()
    assert "| gqa2-mean | 2 | mean |" in md and "decode ms/step" in md
    assert (out / "quality_vs_alpha.png").exists() and (out / "quality_vs_time.png").exists()
    # a table per uptraining rate; alpha 0 (no uptraining) is shared, alpha > 0 differs with the rate
    slow = {r["variant"]: r for r in data["by_lr"][1]["rows"]}
    assert [t["lr"] for t in data["by_lr"]] == [3e-3, 3e-4]
    assert slow["gqa2-mean"]["loss"]["0"] == rows["gqa2-mean"]["loss"]["0"]
    assert slow["gqa2-mean"]["loss"]["0.5"] != rows["gqa2-mean"]["loss"]["0.5"]
    assert "Uptraining at peak learning rate 0.0003:" in md and (out / "quality_vs_alpha_lr0.0003.png").exists()
    cell = json.loads((out / "cells" / "uptrain" / "gqa2-mean" / "a0.5" / "lr0.0003" / "result.json").read_text())
    assert cell["lr"] == 3e-4


def test_colt5_tiny_pretrains_finetunes_on_long_inputs_and_times_the_encoder(tmp_path, longdoc_mini):
    """recipes/colt5-tiny.yaml on a 4k-token `longdoc`-format slice of the demo text: both models
    pretrained with UL2, fine-tuned on retrieval and bible_match at 4k tokens, the encoder timed per
    example at 1k and 4k; the table has a time column per length and the Figure-1 plot."""
    import yaml

    raw = yaml.safe_load((ROOT / "recipes" / "colt5-tiny.yaml").read_text())
    raw["finetune"]["dataset"] = str(longdoc_mini)  # (the real `longdoc` needs Debian packages)
    t0 = time.time()
    out = run_compare(raw, str(tmp_path / "colt5"), workers=2, log=lambda _: None)
    assert time.time() - t0 < 60
    data = json.loads((out / "compare.json").read_text())
    rows = {r["label"]: r for r in data["rows"]}
    assert set(rows) == {"longt5-tiny", "colt5-tiny"}
    for label, row in rows.items():
        assert row["pretrain_loss"] < row["pretrain_loss_start"], label  # UL2 loss fell
        assert all(row["tasks"][t]["n"] == 1 for t in ("retrieval_4096", "bible_match_4096")), label
        assert set(row["encoder_infer_ms"]) == {"1024", "4096"} and all(v > 0 for v in row["encoder_infer_ms"].values())
        assert all(v > 0 for v in row["encoder_train_ms"].values())
        for t in ("retrieval_4096", "bible_match_4096"):  # the answers' loss behind their own and other inputs
            assert 0 < row["tasks"][t]["answer_loss"] and 0 < row["tasks"][t]["answer_loss_other_input"], (label, t)
    assert set(rows["colt5-tiny"]["encoder_infer_speedup"]) == {"1024", "4096"}
    assert "encoder speed at 4,096 tokens" in rows["colt5-tiny"]["verdict"]
    md = (out / "compare.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| model |"))
    assert "| encoder ms/example, 1,024 tokens | encoder ms/example, 4,096 tokens | verdict |" in header
    assert "UL2 loss" in header and "retrieval_4096 (exact match)" in header
    assert (out / "compare.png").exists()
    assert "- colt5-tiny: training step" in md
    losses = md.split("Answer loss (test;")[1]
    assert "| model | retrieval_4096: own input | retrieval_4096: another row's | retrieval_4096: difference" in losses
    bm = rows["colt5-tiny"]["tasks"]["bible_match_4096"]
    gap = bm["answer_loss_other_input"] - bm["answer_loss"]
    assert f"| {bm['answer_loss']:.3f} | {bm['answer_loss_other_input']:.3f} | {gap:+.3f} |" in losses
    # the same cells reported as if the recipe timed inference only: no training-step list
    from frugalformers.compare.recipe import recipe_from_dict
    from frugalformers.compare.report import write_report

    raw["speed"]["train_step"] = False
    md = write_report(recipe_from_dict(raw), out, data["cells"])
    assert "no training step timed" in md and "training step" not in md.split("no training step timed")[1]


def test_skipped_kinds_wait_for_a_resume(tmp_path, demo_data):
    """--skip speed leaves the timings for a later --resume (run when no other job shares the GPU)."""
    recipe = _recipe(models=["bert-tiny"], finetune=ONE_SHORT_FINETUNE)
    recipe["speed"] = {"repeats": 1, "warmup": 0}
    out = tmp_path / "cmp"
    lines = []
    run_compare(recipe, str(out), skip=("speed",), log=lines.append)
    assert "(1 speed cells left for --resume)" in lines[0] or any("1 speed cells left" in s for s in lines)
    assert "speed/bert-tiny" not in _results(out)
    run_compare(recipe, str(out), resume=True, log=lambda _: None)
    assert "speed/bert-tiny" in _results(out)
    with pytest.raises(RecipeError, match="--skip 'sped': not a kind of cell"):
        run_compare(recipe, str(out), resume=True, skip=("sped",))


def test_mowe_tiny_pretrains_on_facts_mixed_into_the_text_and_scores_each_relation(tmp_path, private_home):
    """recipes/mowe-tiny.yaml: T5, Switch and MoWE pretrained on `demo` plus the knowledge facts
    (the recipe's `mix`, made before its cells), a T5 on `demo` alone as the control, fine-tuned on
    the QA pairs (MoWE's bank frozen) and scored per relation beside the most-common-answer baseline
    and the EM ceiling."""
    from frugalformers.data.mix import mix_shards

    t0 = time.time()
    out = run_compare(str(ROOT / "recipes" / "mowe-tiny.yaml"), str(tmp_path / "mowe"), workers=2, log=lambda _: None)
    mixed = private_home / "datasets" / "knowledge" / "shards" / "demo" / "tiny"
    meta = json.loads((mixed / "meta.json").read_text())
    assert meta["mix"]["times"] == 4 and 0 < meta["unrouted_subject_words"] < 1
    with pytest.raises(ValueError, match="holds another mixture"):
        mix_shards("knowledge", "demo", "tiny", times=2, log=lambda *_: None)
    other = load_recipe(str(ROOT / "recipes" / "mowe-tiny.yaml")).raw | {
        "mix": {"add": "knowledge", "into": "demo", "times": 2}
    }
    with pytest.raises(RecipeError, match=r"mix: .*holds another mixture.*--times 2 --force"):
        run_compare(other, str(tmp_path / "other"), log=lambda _: None)
    assert time.time() - t0 < 60
    data = json.loads((out / "compare.json").read_text())
    rows = {r["label"]: r for r in data["rows"]}
    assert set(rows) == {"t5-tiny", "t5-tiny-no-facts", "switch-tiny", "mowe-tiny"}
    for label, row in rows.items():  # every model learned something in pretraining, each has a QA score
        assert row["pretrain_loss"] < row["pretrain_loss_start"], label
        assert row["tasks"]["qa"]["n"] == 2 and row["tasks"]["qa"]["mean"] is not None
        assert set(row["tasks"]["qa"]["breakdown"]) == set(data["majority"]["qa"]["breakdown"])
        assert row["tasks"]["qa"]["answer_loss_sd"] is not None  # two seeds
    assert data["majority"]["qa"]["ceiling"] < 1 and data["majority"]["qa"]["ambiguous"] > 0
    # the per-relation prior over the whole test set is the relations' scores weighted by their size
    test = [json.loads(line) for line in open(dataset_folder("knowledge") / "tasks" / "qa" / "test.jsonl")]
    sizes = Counter(r["relation"] for r in test)
    by = data["majority"]["qa"]["breakdown"]
    weighted = sum(by[k] * n for k, n in sizes.items()) / len(test)
    assert data["majority"]["qa"]["breakdown_all"] == pytest.approx(weighted)
    md = (out / "compare.md").read_text()
    assert f"| all | {weighted:.3f} |" in md
    assert "| relation | most common answer | t5-tiny | t5-tiny-no-facts | switch-tiny | mowe-tiny |" in md
    assert (out / "breakdown.png").stat().st_size > 0  # the same table as a figure
    assert "can reach at most" in md and "plus the knowledge text x 4" in md
    assert "points on its average score" in md  # the verdict against T5 when its score is 0
    cells = out / "cells" / "pretrain"
    assert json.loads((cells / "t5-tiny-no-facts" / "result.json").read_text())["tokens"] > 0
    # what pretraining stored: every model scored zero-shot on 200 test and 200 training facts
    for label in rows:
        stored = data["cloze"][label]
        assert stored["test"]["groups"] >= 190 and stored["train"]["groups"] >= 190
        assert 0 <= stored["test"]["exact"] <= 1 and 0 < stored["test"]["nll"] < 50
    assert "| mowe-tiny | " in md.split("What pretraining stored")[1]
    raw = load_recipe(str(ROOT / "recipes" / "mowe-tiny.yaml")).raw
    with pytest.raises(RecipeError, match="cloze: true scores the `knowledge` facts"):
        recipe_from_dict({**raw, "pretrain": {**raw["pretrain"], "objective": "ul2"}}, "r.yaml")
    with pytest.raises(RecipeError, match="cloze.sentences=0 must be a positive"):
        recipe_from_dict({**raw, "cloze": {"sentences": 0}}, "r.yaml")


def test_a_fine_tuning_rate_sweep_reports_the_rate_chosen_on_validation(tmp_path, demo_data):
    """finetune.lrs: every rate over every seed; per model and task the table shows the test score
    of the rate whose mean validation score is best, and says which rate that was."""
    finetune = {"dataset": "demo", "tasks": ["sentiment"], "seeds": [0, 1]}
    finetune.update(lrs=[1.0e-6, 3.0e-3], min_steps=6, max_steps=6)
    recipe = _recipe(models=["bert-tiny"], finetune=finetune)
    recipe["speed"] = {"kind": "none"}
    out = run_compare(recipe, str(tmp_path / "cmp"), log=lambda _: None)
    done = _results(out)
    assert {"finetune/bert-tiny/sentiment/lr1e-06/seed0", "finetune/bert-tiny/sentiment/lr0.003/seed1"} <= set(done)
    task = json.loads((out / "compare.json").read_text())["rows"][0]["tasks"]["sentiment"]
    by_lr = {float(k): v for k, v in task["by_lr"].items()}
    best = max(by_lr, key=lambda lr: by_lr[lr]["valid"])
    assert task["lr"] == best and task["mean"] == pytest.approx(by_lr[best]["test"])
    md = (out / "compare.md").read_text()
    assert f"sentiment {best:g}" in md
    # speed: none leaves no speed columns, and says the models were not timed (not "not measured yet")
    assert "train speed" not in md and "not measured yet" not in md and "not timed" in md
    with pytest.raises(RecipeError, match="finetune.lrs"):
        recipe_from_dict({**recipe, "finetune": {**recipe["finetune"], "lrs": [0]}}, "r.yaml")


def test_a_rewritten_report_credits_the_cells_machine_not_this_one(tmp_path, demo_data):
    """Every cell records the machine it ran on; `--report` elsewhere (a laptop rewriting a GPU run's
    report) names that machine, and a cell that recorded none is not credited to the rewriting one."""
    recipe = _recipe(models=["bert-tiny"], finetune=ONE_SHORT_FINETUNE)
    recipe["speed"] = {"kind": "none"}
    out = run_compare(recipe, str(tmp_path / "cmp"), log=lambda _: None)
    files = [f for f in (out / "cells").rglob("result.json") if "baseline" not in f.parts]
    assert {f.relative_to(out / "cells").parts[0] for f in files} >= {"pretrain", "finetune"}
    for f in files:  # as if the cells had run on a GPU machine
        r = json.loads(f.read_text())
        assert r["device"]
        f.write_text(json.dumps({**r, "device": "1x NVIDIA H100 80GB HBM3"}))
    run_compare(recipe, str(out), report_only=True, log=lambda _: None)
    assert "Hardware: 1x NVIDIA H100 80GB HBM3." in (out / "compare.md").read_text()
    for f in files:  # cells written before cells recorded their device
        f.write_text(json.dumps({k: v for k, v in json.loads(f.read_text()).items() if k != "device"}))
    run_compare(recipe, str(out), report_only=True, log=lambda _: None)
    assert "Hardware: not recorded by the cells." in (out / "compare.md").read_text()


def test_cells_short_of_device_memory_beside_others_run_again_alone():
    """A cell that failed for want of device memory while sharing the device, and the cells that
    waited on it, are run again one at a time; other failures are left for the user to fix."""
    from frugalformers.compare.plan import Cell
    from frugalformers.compare.runner import BLOCKED, cells_to_retry_alone

    pre = Cell("pretrain/a", "pretrain")
    ft = Cell("finetune/a/t/seed0", "finetune", deps=("pretrain/a",))
    other = Cell("finetune/b/t/seed0", "finetune")
    bug = Cell("finetune/c/t/seed0", "finetune")
    phase = [pre, ft, other, bug]
    oom = "RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"
    failed = {pre.key: oom, ft.key: BLOCKED, bug.key: "KeyError: 'x'"}
    assert cells_to_retry_alone(phase, failed) == [pre, ft]
    assert cells_to_retry_alone(phase, {bug.key: "KeyError: 'x'"}) == []
    assert cells_to_retry_alone(phase, {other.key: "torch.OutOfMemoryError: CUDA out of memory."}) == [other]


def test_a_run_whose_cells_ran_short_of_memory_finishes_them_alone(tmp_path, demo_data, monkeypatch):
    """The shared phase (workers > 1) is replaced by one in which the pretraining cell runs out of
    device memory and its fine-tuning waits; the runner runs both again, alone, and the run ends whole."""
    from frugalformers.compare import runner

    def crowded_pool(shared, stored, run_dir, workers, ready, blocked, finished, failed):
        for c in sorted(shared, key=lambda c: runner.PRIORITY.get(c.kind, 2)):
            if blocked(c):
                failed[c.key] = runner.BLOCKED
            elif c.kind == "pretrain":
                finished(c.key, None, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", 1.0)
            else:
                finished(*runner.execute(stored, str(run_dir), c.key))

    monkeypatch.setattr(runner, "_run_pool", crowded_pool)
    recipe = _recipe(models=["bert-tiny"], finetune=ONE_SHORT_FINETUNE)
    recipe["speed"] = {"kind": "none"}
    logs = []
    out = run_compare(recipe, str(tmp_path / "cmp"), workers=2, log=logs.append)
    assert any("ran out of device memory beside others" in m for m in logs)
    assert {"pretrain/bert-tiny", "finetune/bert-tiny/sentiment/seed0"} <= set(_results(out))


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_loads_and_plans(path):
    """A typo in a GPU recipe is found here, not on a lent GPU."""
    recipe = load_recipe(str(path))
    cells = plan(recipe)
    assert cells[0].key == "baseline/unigram" and any(c.kind == "pretrain" for c in cells)
    keys = [c.key for c in cells]
    assert len(keys) == len(set(keys))
    for c in cells:  # dependencies come first
        assert all(keys.index(d) < keys.index(c.key) for d in c.deps), c.key


def test_encoder_speed_without_the_training_step(demo_data):
    """`speed.train_step: false` times inference only (the training step records nothing)."""
    from frugalformers.compare.cells import run_encoder_speed
    from frugalformers.compare.plan import Cell
    from frugalformers.compare.recipe import recipe_from_dict

    raw = _recipe(models=["longt5-tiny"])
    raw["pretrain"]["data"]["seq_len"] = 64
    raw["speed"] = {"kind": "encoder", "lengths": [256], "repeats": 1, "warmup": 0, "train_step": False}
    result = run_encoder_speed(recipe_from_dict(raw), Cell("speed/longt5-tiny", "speed", {"label": "longt5-tiny"}))
    assert result["encoder_infer_ms_per_example"]["256"] > 0
    assert result["encoder_train_ms_per_example"] == {}
