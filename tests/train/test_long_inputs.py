"""CoLT5-tiny on long inputs on CPU: UL2 pretraining, and fine-tuning on a longdoc-format task at
8k tokens (documents stored by reference, as `frugal data prepare longdoc` writes them)."""

import json
import shutil

import torch

from frugalformers.cli import main


def test_colt5_tiny_ul2_pretraining(tmp_path, demo_data):
    assert (
        main(
            [
                "train",
                "--preset",
                "colt5-tiny",
                "--no-progress",
                "objective=ul2",
                "steps=3",
                "data.seq_len=512",
                "data.target_len=64",
                "data.batch_size=2",
                "eval_batches=1",
                f"out={tmp_path / 'ul2'}",
            ]
        )
        == 0
    )


def test_colt5_tiny_finetunes_on_an_8k_longdoc_task(tmp_path, demo_data):
    ds = tmp_path / "longdoc-mini"
    shutil.copytree(demo_data / "tokenizer", ds / "tokenizer")
    texts = [json.loads(line)["text"] for line in (demo_data / "text/train.jsonl").read_text().splitlines()]
    docs = [
        {"id": f"doc{i}", "label": f"part {i}", "text": "\n\n".join(texts[i * 300 : (i + 1) * 300])} for i in range(3)
    ]
    (ds / "long").mkdir()
    (ds / "long/docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    n_chars = 8192 * 4
    rows = [
        {"doc": i % 3, "start": 1000 * (i // 3), "end": 1000 * (i // 3) + n_chars, "label": f"part {i % 3}"}
        for i in range(12)
    ]
    (ds / "tasks/source_8192").mkdir(parents=True)
    (ds / "tasks/source_8192/task.json").write_text(
        json.dumps({"labels": [d["label"] for d in docs], "metric": "accuracy"})
    )
    for split in ("train", "validation", "test"):
        (ds / f"tasks/source_8192/{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "ft"
    assert (
        main(
            [
                "finetune",
                "--preset",
                "colt5-tiny",
                "--no-progress",
                f"data.dataset={ds}",
                "data.task=source_8192",
                "data.seq_len=8192",
                "data.target_len=6",
                "data.batch_size=2",
                "steps=2",
                "eval_batches=1",
                f"out={out}",
            ]
        )
        == 0
    )
    assert "accuracy" in json.loads((out / "test_metrics.json").read_text())


def test_mowe_tiny_pretrains_and_finetunes_with_word_ids(tmp_path, demo_data):
    pre = tmp_path / "mowe"
    common = ["data.batch_size=4", "data.seq_len=48", "eval_batches=1"]
    assert (
        main(
            ["train", "--preset", "mowe-tiny", "--no-progress", "steps=3", "data.target_len=16", f"out={pre}", *common]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "--preset",
                "mowe-tiny",
                "--no-progress",
                "steps=2",
                "objective=ul2",
                "data.target_len=48",
                f"out={tmp_path / 'ul2'}",
                *common,
            ]
        )
        == 0
    )
    ft = tmp_path / "ft"
    assert (
        main(
            [
                "finetune",
                "--preset",
                "mowe-tiny",
                "--no-progress",
                "steps=3",
                "data.task=sentiment",
                "data.target_len=4",
                f"init_from={pre}",
                f"out={ft}",
                *common,
            ]
        )
        == 0
    )
    assert "accuracy" in json.loads((ft / "test_metrics.json").read_text())


def test_mowe_tiny_pretrains_then_finetunes_on_knowledge_qa_with_frozen_experts(tmp_path, demo_data):
    """The issue's path: `frugal train --preset mowe-tiny`, then `frugal finetune` on the knowledge
    dataset's closed-book QA (with the pretraining tokenizer) with the expert bank frozen, as the
    paper fine-tunes: the bank comes out unchanged, the rest of the model trained."""
    from frugalformers.checkpoint import read_state
    from frugalformers.data.datasets import prepare
    from frugalformers.train.run import resolve_checkpoint

    prepare("knowledge", log=lambda *_: None)
    pre, ft = tmp_path / "mowe", tmp_path / "qa"
    common = ["--preset", "mowe-tiny", "--no-progress", "data.batch_size=4", "eval_batches=1"]
    assert main(["train", *common, "steps=3", "data.seq_len=48", "data.target_len=16", f"out={pre}"]) == 0
    args = ["steps=3", "data.dataset=knowledge", "data.task=qa", "data.tokenizer=demo/tiny", "data.seq_len=32",
            "data.target_len=8", "freeze_experts=true", f"init_from={pre}", f"out={ft}"]  # fmt: skip
    assert main(["finetune", *common, *args]) == 0
    scored = json.loads((ft / "test_metrics.json").read_text())  # MoWE's routing ids go with the swapped inputs
    assert set(scored) == {"em", "f1", "answer_loss", "answer_loss_other_input"}
    assert 0 < scored["answer_loss"] < 20 and 0 < scored["answer_loss_other_input"] < 20
    before, after = (read_state(resolve_checkpoint(str(r)) / "model.safetensors") for r in (pre, ft))
    bank = [k for k in before if ".bank." in k]
    assert bank and all(torch.equal(before[k], after[k]) for k in bank)
    assert any(not torch.equal(before[k], after[k]) for k in before if ".bank." not in k)
