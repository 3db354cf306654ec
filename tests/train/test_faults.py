"""Bad inputs and faults, one row each: the command's exit code, its one-line message (no
traceback), and that nothing a user made (an earlier run's config, checkpoints, a file) was lost.
Plus the user-CSV workflow end to end: finetune on your own CSV, eval --file, predict."""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from frugalformers.cli import main
from frugalformers.train.checkpointing import list_checkpoints

SRC = str(Path(__file__).resolve().parents[2] / "src")
FAST = ["data.batch_size=4", "data.seq_len=16", "eval_batches=1", "log_every=1", "eval_every=0"]
TOPICS = {"sports": "match goal team", "politics": "vote party minister", "tech": "software chip phone"}


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        w.writeheader()
        w.writerows(rows)
    return path


def topic_rows(n: int, labels=TOPICS, start: int = 0) -> list[dict]:
    names = list(labels)
    return [
        {"text": f"{labels[names[i % len(names)]]} story {i}", "label": names[i % len(names)]}
        for i in range(start, start + n)
    ]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a run folder that a failed command must leave as it was."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.name != ".run.lock" and "tensorboard" not in p.parts
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory, demo_data):
    """A pretrained MLM run and a classifier fine-tuned on a 3-topic CSV (shared by the rows)."""
    root = tmp_path_factory.mktemp("runs")
    mlm = root / "mlm"
    assert (
        main(["train", "--preset", "bert-tiny", "--no-progress", "steps=2", "save_every=1", f"out={mlm}", *FAST]) == 0
    )
    data = root / "data"
    data.mkdir()
    train = write_csv(data / "train.csv", topic_rows(48))
    test = write_csv(data / "test.csv", topic_rows(12, start=100))
    clf = root / "clf"
    args = ["finetune", "--no-progress", "steps=3", f"init_from={mlm}", f"data.file={train}", f"data.test_file={test}"]
    assert main([*args, f"out={clf}", *FAST]) == 0
    return {"mlm": mlm, "clf": clf, "train": train, "test": test, "root": root}


def run(args, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    return code, err


def expect_error(args, capsys, pattern: str, code: int = 2) -> str:
    got, err = run(args, capsys)
    lines = [line for line in err.splitlines() if not line.startswith("warning")]
    assert got == code, err
    assert len(lines) == 1 and "Traceback" not in err, err  # one line, no traceback
    assert __import__("re").search(pattern, lines[0]), lines[0]
    return lines[0]


# ------------------------------------------------------------------ files a user brings
def _bad_files(tmp: Path) -> list[tuple[str, Path | None, str]]:
    """(name, file for data.file, expected message) for broken training files."""
    cases = []

    def add(name, content, pattern, suffix=".csv", raw=False):
        path = tmp / f"{name}{suffix}"
        path.write_bytes(content if raw else content.encode())
        cases.append((name, path, pattern))

    add("not_utf8", b"text,label\ngood,a\ncaf\xe9 ok,b\n", r"not_utf8\.csv:3: not UTF-8 text \(byte 0xe9", raw=True)
    add("no_text_column", "sentence,label\nhi,a\n", r":1: the header must name a `text` column")
    add("empty_text", "text,label\n,a\n", r"empty_text\.csv:2: `text` is missing or empty")
    add("more_fields", "text,label\nhi,a,extra\n", r":2: more fields than the header's 2")
    add("fewer_fields", "text,label,text_b\nhi,a\n", r":2: fewer fields than the header's 3")
    add("bad_json", '{"text": "a", "label": "x"}\n{"text": \n', r"bad_json\.jsonl:2: not valid JSON", ".jsonl")
    add("not_object", '["a", "b"]\n', r":1: each line must be a JSON object, got list", ".jsonl")
    add("wrong_suffix", "text,label\nhi,a\n", r"use a \.csv, \.tsv or \.jsonl file", ".txt")
    add("no_label", '{"text": "a"}\n{"text": "b", "label": "x"}\n', r"row 1 has no `label`", ".jsonl")
    add("empty_label", "text,label\nhi,\n", r":2: `label` is empty")
    add("one_row", "text,label\nonly one,a\n", r"1 row\(s\), all held out for validation: too few")
    add(
        "few_rows",
        "text,label\n" + "".join(f"row {i},{'ab'[i % 2]}\n" for i in range(6)),
        r"lower data.batch_size to 5",
    )
    add("empty_file", "text,label\n", r"empty_file\.csv: no rows")
    cases.append(("missing_file", tmp / "nowhere.csv", r"nowhere\.csv: no such file"))
    return cases


@pytest.mark.parametrize("case", range(14))
def test_a_broken_training_file_is_one_line(case, tmp_path, runs, capsys):
    name, path, pattern = _bad_files(tmp_path)[case]
    out = tmp_path / "ft"
    args = ["finetune", "--preset", "bert-tiny", "--no-progress", "steps=2", f"data.file={path}", f"out={out}"]
    expect_error([*args, *FAST[1:]] if name == "few_rows" else [*args, *FAST], capsys, pattern)
    assert not (out / "config.yaml").exists()  # nothing written before the data validated


def test_long_fields_and_padded_labels_are_read(tmp_path):
    from frugalformers.data.tasks import load_user_rows
    from frugalformers.train.user_data import _labelled

    path = write_csv(tmp_path / "long.csv", [{"text": "word " * 60_000, "label": " a "}, {"text": "x", "label": "a"}])
    rows = _labelled(str(path))
    assert len(rows[0]["text"]) == 300_000 and {r["label"] for r in rows} == {"a"}  # one class, not two
    assert len(load_user_rows(path)) == 2


def test_unknown_labels_in_a_validation_file(tmp_path, runs, capsys):
    valid = write_csv(tmp_path / "valid.csv", topic_rows(6) + [{"text": "x", "label": "weather"}])
    expect_error(
        ["finetune", "--preset", "bert-tiny", "--no-progress", "steps=2", f"data.file={runs['train']}",
         f"data.valid_file={valid}", f"out={tmp_path / 'ft'}", *FAST],
        capsys, r"valid\.csv: labels \['weather'\] are not among the 3",
    )  # fmt: skip
    expect_error(
        ["finetune", "--preset", "bert-tiny", "steps=2", f"data.valid_file={valid}", "data.task=sentiment", *FAST],
        capsys, r"go with data\.file",
    )  # fmt: skip


def test_free_text_answers_in_a_users_file(tmp_path, demo_data, capsys):
    """data.metric=em_f1: a generative model fine-tunes on a file of free-text answers and is scored by
    exact match / token F1, also on answers its training file never held; `eval --file` scores the same
    way unless told otherwise; a classifier and a prepared task refuse the option."""
    qa = [{"text": f"what follows {w}?", "text_b": f"{w} then {v}", "label": v} for w, v in
          (("red", "blue"), ("one", "two"), ("cat", "dog"), ("sun", "moon"))] * 6  # fmt: skip
    test = [{"text": "what follows up?", "text_b": "up then down", "label": "down"}] * 3
    train, test_file = tmp_path / "qa.jsonl", tmp_path / "qa_test.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in qa))
    test_file.write_text("".join(json.dumps(r) + "\n" for r in test))
    out = tmp_path / "t5"
    args = ["finetune", "--preset", "t5-tiny", "--no-progress", "steps=2", f"data.file={train}",
            f"data.test_file={test_file}", "data.target_len=4", f"out={out}", *FAST]  # fmt: skip
    assert run([*args, "data.metric=em_f1"], capsys)[0] == 0  # "down" is in no training row: not an error
    scored = json.loads((out / "test_metrics.json").read_text())
    assert set(scored) == {"em", "f1", "answer_loss", "answer_loss_other_input"}
    assert 0.0 <= scored["em"] <= scored["f1"] <= 1.0
    assert main(["eval", str(out), "--file", str(test_file)]) == 0
    assert set(json.loads(capsys.readouterr().out)) >= {"em", "f1"}  # the run's metric
    assert main(["eval", str(out), "--file", str(test_file), "--metric", "accuracy"]) == 0
    assert "accuracy" in json.loads(capsys.readouterr().out)
    expect_error([*args[:-1], f"out={tmp_path / 'x'}", "data.metric=exact"], capsys, r"data\.metric='exact' is not")
    expect_error(
        ["finetune", "--preset", "bert-tiny", "--no-progress", "steps=2", f"data.file={train}", "data.metric=em_f1",
         f"out={tmp_path / 'bert'}", *FAST], capsys, r"qa\.jsonl.*free-text answers.*not the encoder",
    )  # fmt: skip
    expect_error(
        ["finetune", "--preset", "t5-tiny", "steps=2", "data.task=sentiment", "data.metric=em_f1", *FAST],
        capsys, r"data\.metric goes with data\.file",
    )  # fmt: skip


# ------------------------------------------------------------------ run folders
def test_a_run_is_never_run_over(tmp_path, runs, capsys):
    out = tmp_path / "r"
    base = ["train", "--preset", "bert-tiny", "--no-progress", "steps=2", f"out={out}", *FAST]
    assert run(base, capsys)[0] == 0
    before = snapshot(out)
    expect_error(base, capsys, r"already holds a run; add --resume to continue it, --overwrite to start it again")
    assert snapshot(out) == before
    # a failing run with --overwrite has not touched the folder yet
    expect_error([*base, "--overwrite", "data.tokenizer=huge"], capsys, r"has no tokenizer 'huge'")
    assert snapshot(out) == before
    expect_error(["train", "--preset", "fnet-tiny", "--resume", f"out={out}", "steps=3", *FAST], capsys,
                 r"holds a run of preset 'bert-tiny', not 'fnet-tiny': resume it with --preset bert-tiny")  # fmt: skip
    assert snapshot(out) == before
    assert run(["train", "--resume", "--no-progress", f"out={out}", "steps=3", *FAST], capsys)[0] == 0  # preset read
    assert [p.name for p in list_checkpoints(out)][-1] == "step-00000003"
    assert run([*base, "--overwrite"], capsys)[0] == 0  # replaced: the metrics start again at step 1
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[0] == 1 and max(steps) == 2


def test_a_second_run_into_the_same_folder_is_refused(tmp_path, runs, capsys):
    from frugalformers.train.run_folder import run_folder

    out = tmp_path / "busy"
    with run_folder(out):
        expect_error(["train", "--preset", "bert-tiny", "steps=2", f"out={out}", *FAST], capsys,
                     rf"out={out} is in use by another run \(pid {os.getpid()}\)")  # fmt: skip


@pytest.mark.parametrize(
    "out, pattern",
    [("/proc/frugal-run", r"out=/proc/frugal-run: cannot write there"), ("FILE", r"is a file, not a folder")],
)
def test_an_out_that_cannot_be_a_folder(out, pattern, tmp_path, runs, capsys):
    if out == "FILE":
        out = tmp_path / "a-file"
        out.write_text("mine")
    expect_error(["train", "--preset", "bert-tiny", "steps=2", f"out={out}", *FAST], capsys, pattern)
    if isinstance(out, Path):
        assert out.read_text() == "mine"


def test_init_from_a_model_of_another_preset(tmp_path, runs, capsys):
    args = ["finetune", "--no-progress", "steps=2", f"init_from={runs['mlm']}", f"data.file={runs['train']}", *FAST]
    expect_error(["finetune", "--preset", "fnet-tiny", *args[1:], f"out={tmp_path / 'a'}"], capsys,
                 r"init_from=.* is not a 'fnet-tiny' model \(activation: 'gelu_new' vs 'gelu'")  # fmt: skip
    assert run([*args, f"out={tmp_path / 'b'}"], capsys)[0] == 0  # --preset left out: the run's own (bert-tiny)


def test_a_diverged_run_keeps_its_last_good_checkpoint(tmp_path, runs, monkeypatch, capsys):
    from frugalformers.models import encoder

    out = tmp_path / "nan"
    base = ["train", "--preset", "bert-tiny", "--no-progress", "save_every=2", f"out={out}", *FAST]
    assert run([*base, "steps=2"], capsys)[0] == 0
    good = (list_checkpoints(out)[-1] / "model.safetensors").read_bytes()
    real = encoder.BertForMaskedLM.forward

    def nan(self, *a, **k):
        o = real(self, *a, **k)
        o.loss = o.loss * float("nan")
        return o

    monkeypatch.setattr(encoder.BertForMaskedLM, "forward", nan)
    pattern = r"2 consecutive steps had a non-finite loss.*the newest checkpoint, step-00000002, is from before it"
    expect_error([*base, "steps=8", "max_bad_steps=2", "--resume"], capsys, pattern)
    assert [p.name for p in list_checkpoints(out)] == ["step-00000002"]
    assert (list_checkpoints(out)[-1] / "model.safetensors").read_bytes() == good
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    reports = [r for r in records if "nonfinite" in r]  # the first bad step of the streak says what was bad
    assert len(reports) == 1 and reports[0]["step"] == 3
    assert reports[0]["nonfinite"]["loss_finite"] is False
    assert reports[0]["nonfinite"]["nonfinite_params"]["count"] == 0


KILL_IN_SECOND_SAVE = """
import os, signal, sys, torch
from frugalformers.train import checkpointing
from frugalformers.cli import main
real, calls = torch.save, {"n": 0}
def dying(obj, path, *a, **k):
    calls["n"] += 1
    if calls["n"] == 2:  # the second checkpoint: half a file, then kill -9
        open(path, "wb").write(b"partial")
        os.kill(os.getpid(), signal.SIGKILL)
    return real(obj, path, *a, **k)
checkpointing.torch.save = dying
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_during_a_checkpoint_write_then_resume(tmp_path, runs, capsys):
    out = tmp_path / "killed"
    args = ["train", "--preset", "bert-tiny", "--no-progress", "steps=4", "save_every=2", "keep_last=3", f"out={out}"]
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(KILL_IN_SECOND_SAVE), *args, *FAST],
                       env={**os.environ, "PYTHONPATH": SRC}, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == -signal.SIGKILL
    assert [p.name for p in list_checkpoints(out)] == ["step-00000002"]
    assert any(p.name.startswith(".") for p in (out / "checkpoints").iterdir())  # the half-written one
    code, err = run([*args, *FAST, "--resume"], capsys)
    assert code == 0 and "removed what an interrupted write left" not in err  # (logged to stdout)
    assert [p.name for p in list_checkpoints(out)] == ["step-00000002", "step-00000004"]
    assert not any(p.name.startswith(".") for p in (out / "checkpoints").iterdir())


def test_a_torn_last_metrics_line(tmp_path, runs, capsys):
    out = tmp_path / "torn"
    base = ["train", "--preset", "bert-tiny", "--no-progress", "save_every=2", f"out={out}", *FAST]
    assert run([*base, "steps=2"], capsys)[0] == 0
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 1.')  # a kill in the middle of a write
    code, err = run(["plot", out, "--out", tmp_path / "c.png"], capsys)
    assert code == 0 and f"warning: {out / 'metrics.jsonl'}: its last line is incomplete" in err
    assert run([*base, "steps=3", "--resume"], capsys)[0] == 0
    (out / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    expect_error(["plot", out, "--out", tmp_path / "d.png"], capsys, r"metrics\.jsonl:2: not a JSON record")


def test_ctrl_c_says_how_to_resume(tmp_path, runs, monkeypatch, capsys):
    from frugalformers.train import batches as batches_mod

    real, calls = batches_mod.PretrainBatches.next_batch, {"n": 0}

    def interrupted(self):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(batches_mod.PretrainBatches, "next_batch", interrupted)
    out = tmp_path / "ctrl-c"
    expect_error(["train", "--preset", "bert-tiny", "--no-progress", "steps=9", "save_every=2", f"out={out}", *FAST],
                 capsys, r"^frugal: interrupted at step 3; the newest checkpoint is step-00000002; resume with: "
                 r"frugal train .* --resume$", code=130)  # fmt: skip


# ------------------------------------------------------------------ configs and commands
@pytest.mark.parametrize(
    "yaml_text, pattern",
    [
        ("preset: bert-tiny\nsteps: [1,\n", r"is not valid YAML at line \d"),
        ("- a\n- b\n", r"must be a mapping of options"),
        ("preset: bert-tiny\nstpes: 3\n", r"bad config key or value 'stpes'.*did you mean \['steps'\]"),
        (None, r"config file '.*missing\.yaml' does not exist"),
    ],
)
def test_config_file_mistakes(yaml_text, pattern, tmp_path, capsys):
    path = tmp_path / "missing.yaml"
    if yaml_text is not None:
        path = tmp_path / "run.yaml"
        path.write_text(yaml_text)
    expect_error(["train", "--config", path, f"out={tmp_path / 'r'}"], capsys, pattern)


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["train", "--preset", "bert-tinny"], r"unknown preset 'bert-tinny'; did you mean"),
        (["finetune", "--preset", "bert-tiny", "data.dataset=classify", "data.task=isa"],
         r"dataset 'classify' has no tokenizer of its own|no task 'isa' in dataset 'classify'"),
        (["finetune", "--preset", "bert-tiny"], r"fine-tuning needs data\.task=TASK"),
        (["train", "--resume", "out=/tmp/frugal-no-such-run"], r"holds no run's config\.yaml to take the preset from"),
        (["train", "--preset", "bert-tiny", "optim.warmup=2"], r"optim\.warmup=2.0 is not valid; use a fraction"),
    ],
)  # fmt: skip
def test_command_mistakes(args, pattern, tmp_path, capsys, demo_data):
    expect_error([*args, f"out={tmp_path / 'r'}"] if "out=" not in " ".join(args) else args, capsys, pattern)


def test_generate_and_eval_on_the_wrong_kind_of_model(runs, tmp_path, capsys):
    expect_error(
        ["generate", runs["clf"], "hello"], capsys, r"is an encoder \('classify' head\), which does not generate"
    )
    expect_error(["eval", runs["mlm"], "--file", runs["test"]], capsys,
                 r"is a masked-LM checkpoint, not a classifier: fine-tune it first")  # fmt: skip
    expect_error(["eval", runs["clf"], "--file", runs["test"], "--split", "validation"], capsys,
                 r"--split applies to a prepared task")  # fmt: skip
    expect_error(["eval", runs["clf"], "--file", runs["test"], "--task", "sentiment"], capsys, r"one of them")
    expect_error(["predict", runs["clf"], "--file", runs["test"], "--out", runs["train"]], capsys,
                 r"train\.csv exists; choose another file")  # fmt: skip


# ------------------------------------------------------------------ the user-CSV workflow
def test_your_own_csv_end_to_end(tmp_path, runs, capsys):
    """8 categories, ~2k rows: fine-tune, then eval --file scores every test row; a renamed class is
    an error naming it (or wrong answers on request), a class missing from the file is fine."""
    labels = {f"cat{i}": f"word{i}a word{i}b word{i}c" for i in range(8)}
    data = tmp_path / "mine"
    data.mkdir()
    train = write_csv(data / "train.csv", topic_rows(2291, labels))
    test_rows = topic_rows(287, labels, start=5000)
    test = write_csv(data / "test.csv", test_rows)
    out = tmp_path / "ft"
    code, err = run(["finetune", "--preset", "bert-tiny", "--no-progress", "steps=40", "optim.lr=3e-3",
                     f"data.file={train}", f"out={out}", "data.batch_size=32", "data.seq_len=16"], capsys)  # fmt: skip
    assert code == 0, err
    capsys.readouterr()
    assert main(["eval", str(out), "--file", str(test)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 287 and result["seq_len"] == 16 and result["accuracy"] > 0.5
    dropped = write_csv(data / "dropped.csv", [r for r in test_rows if r["label"] != "cat3"])
    assert main(["eval", str(out), "--file", str(dropped)]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == sum(r["label"] != "cat3" for r in test_rows)
    renamed = write_csv(data / "renamed.csv", [{**r, "label": r["label"].replace("cat3", "kat3")} for r in test_rows])
    expect_error(["eval", out, "--file", renamed], capsys, r"labels \['kat3'\] are not among the 8 the model")
    assert main(["eval", str(out), "--file", str(renamed), "--unknown-labels", "wrong"]) == 0
    wrong = json.loads(capsys.readouterr().out)
    assert wrong["n"] == 287 and wrong["accuracy"] <= result["accuracy"] - 30 / 287
    preds = tmp_path / "preds.csv"
    unlabelled = write_csv(data / "new.csv", [{"text": r["text"]} for r in test_rows[:10]])
    assert main(["predict", str(out), "--file", str(unlabelled), "--out", str(preds)]) == 0
    with open(preds) as f:
        got = list(csv.DictReader(f))
    assert len(got) == 10 and {r["prediction"] for r in got} <= set(labels)
    assert abs(sum(float(got[0][f"p_{lab}"]) for lab in labels) - 1) < 1e-4
