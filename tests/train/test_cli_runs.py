"""Smoke tests of the commands on tiny presets with the real demo data."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from frugalformers.cli import main

FAST = ["data.batch_size=8", "data.seq_len=32", "data.target_len=8", "eval_batches=2", "log_every=2"]


@pytest.mark.parametrize(
    "preset, objective",
    [
        ("bert-tiny", "auto"),
        ("fnet-tiny", "mlm"),
        ("t5-tiny", "span"),
        ("t5-tiny", "ul2"),
        ("llama-tiny-gqa4", "clm"),
    ],
)
def test_train(tmp_path, demo_data, preset, objective, capsys):
    out = tmp_path / preset
    assert (
        main(["train", "--preset", preset, "--no-progress", "steps=4", f"objective={objective}", f"out={out}", *FAST])
        == 0
    )
    assert (out / "checkpoints/step-00000004/model.safetensors").exists()
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("valid_loss" in r for r in recs) and any("tokens_per_s" in r for r in recs)


@pytest.mark.parametrize("preset", ["bert-tiny", "t5-tiny", "llama-tiny"])
def test_finetune_eval_generate(tmp_path, demo_data, preset, capsys):
    pre = tmp_path / "pre"
    assert main(["train", "--preset", preset, "--no-progress", "steps=2", f"out={pre}", *FAST]) == 0
    ft = tmp_path / "ft"
    assert (
        main(
            [
                "finetune",
                "--preset",
                preset,
                "--no-progress",
                "steps=3",
                f"out={ft}",
                "data.task=sentiment",
                f"init_from={pre}",
                *FAST,
            ]
        )
        == 0
    )
    test = json.loads((ft / "test_metrics.json").read_text())
    assert 0.0 <= test["accuracy"] <= 1.0
    capsys.readouterr()
    assert main(["eval", str(ft), "--task", "sentiment", "--split", "validation", "--seq-len", "32"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 400 and 0.0 <= result["accuracy"] <= 1.0
    generated = preset != "bert-tiny"  # generated answers also get their loss, behind their own and other inputs
    assert ("answer_loss" in result and "answer_loss_other_input" in result) == generated
    if preset != "bert-tiny":
        assert main(["generate", str(pre), "the film is", "a", "--max-new-tokens", "5"]) == 0
        lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
        assert [x["prompt"] for x in lines] == ["the film is", "a"]
        # the decode attention paths from the command line: the same greedy text
        for opts in (["--grouped-decode", "matmul"], ["--grouped-decode", "triton"]):
            assert main(["generate", str(pre), "the film is", "a", "--max-new-tokens", "5", *opts]) == 0
            assert [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()] == lines


def test_finetune_on_a_user_csv(tmp_path, demo_data):
    csv = tmp_path / "mine.csv"
    rows = ["text,label"] + [f"{'good great fine' if i % 2 else 'bad awful poor'} movie {i},{i % 2}" for i in range(60)]
    csv.write_text("\n".join(rows) + "\n")
    assert (
        main(
            [
                "finetune",
                "--preset",
                "bert-tiny",
                "--no-progress",
                "steps=3",
                f"out={tmp_path / 'ft'}",
                f"data.file={csv}",
                *FAST,
            ]
        )
        == 0
    )


def test_bad_override_is_a_clear_cli_error(capsys):
    assert main(["train", "--preset", "bert-tiny", "optim.lrr=3"]) == 2
    assert "optim.lrr" in capsys.readouterr().err


def test_train_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for key in (
        "optim.lr",
        "optim.schedule",
        "data.seq_len",
        "save_every",
        "keep_last",
        "early_stop_metric",
        "precision",
        "compile",
        "max_bad_steps",
    ):
        assert key in out


def test_plot(tmp_path, demo_data):
    run = tmp_path / "r"
    assert main(["train", "--preset", "bert-tiny", "--no-progress", "steps=4", f"out={run}", *FAST]) == 0
    png = tmp_path / "c.png"
    assert main(["plot", str(run), "--out", str(png)]) == 0 and png.stat().st_size > 5000


def test_demo_end_to_end_short(tmp_path, capsys):
    """The demo's pipeline at a reduced budget: pretraining lowers every model's MLM loss, the table
    has the no-pretraining rows and the verdict column, a second run reads the cells back."""
    args = ["demo", "--out", str(tmp_path / "demo"), "--pretrain-steps", "8", "--finetune-steps", "3", "--seeds", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| model |"))
    assert header.rstrip().endswith("| verdict |") and "| sentiment (accuracy) | topic (accuracy) |" in header
    for name in ("bert-tiny", "fnet-tiny", "sparse-mixer-tiny"):
        row = next(line for line in out.splitlines() if line.startswith(f"| {name} |"))
        start, end = (float(x) for x in row.split("|")[4].split("→"))
        assert end < start, row  # held-out MLM loss: untrained -> pretrained
        assert f"| {name}, no pretraining |" in out
    assert "| majority class |" in out and (tmp_path / "demo/pretrain_curves.png").exists()
    assert len(list((tmp_path / "demo/cells").rglob("result.json"))) == 3 + 12 + 3 + 1
    logs = sorted((tmp_path / "demo/cells/finetune").glob("*/*/seed0/log.txt"))
    assert len(logs) == 12
    for log in logs:
        scaled = "embedding tables scaled by" in log.read_text()
        assert scaled == ("-scratch" not in str(log)), log  # rescale_embeddings acts on pretrained models only
    assert main(args) == 0 and "19 already done, 0 to run" in capsys.readouterr().out  # read back, nothing retrained

    # the two experiments of benchmarks/QUALITY.md `demo` run on a finished demo folder
    bench = Path(__file__).resolve().parents[2] / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        import demo_embedding_lr
        import demo_finetune_budget
        import demo_pretrain_variants
        import linear_probe
    finally:
        sys.path.remove(str(bench))
    rows = linear_probe.probe_folder(tmp_path / "demo", ["topic"], log=lambda *_: None)
    assert [r["model"] for r in rows] == ["bert-tiny", "fnet-tiny", "sparse-mixer-tiny"]
    assert all(0.0 <= r["pretrained"] <= 1.0 and r["embedding norm, pretrained"] > 0 for r in rows)
    capsys.readouterr()
    lr_args = ["--folder", str(tmp_path / "demo"), "--out", str(tmp_path / "x"), "--models", "fnet-tiny"]
    assert demo_embedding_lr.main(lr_args + ["--factors", "10"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| fnet-tiny")]
    assert len(table) == 4 and all("| 10 |" in line for line in table)  # 2 tasks x with / without pretraining
    budget_args = ["--folder", str(tmp_path / "demo"), "--out", str(tmp_path / "b"), "--models", "fnet-tiny"]
    assert demo_finetune_budget.main(budget_args + ["--steps", "3", "--batch", "8"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| fnet-tiny")]
    assert len(table) == 1 and table[0].startswith("| fnet-tiny | 3 | ")  # averages with and without pretraining
    assert len(json.loads((tmp_path / "b" / "scores.json").read_text())) == 4  # 2 tasks x with / without
    variant = ["t", "pretrain.steps=4", "finetune.min_steps=2", "finetune.max_steps=2", "finetune.seeds=[0]"]
    variant.append("pretrain.optim.lr=1e-3")
    out = tmp_path / "v"
    assert demo_pretrain_variants.main(["--models", "fnet-tiny", "--out", str(out), "--variant", *variant]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| t |")]
    assert len(table) == 1 and table[0].startswith("| t | fnet-tiny | ")
    pretrain = yaml.safe_load((out / "t/recipe.yaml").read_text())["pretrain"]
    assert pretrain["steps"] == 4 and pretrain["optim"]["lr"] == 1e-3  # the overrides took, 1e-3 as a number
