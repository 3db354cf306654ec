"""`frugal eval`, `frugal predict` and `frugal generate` on saved checkpoints.

A checkpoint inside a run folder brings its run's settings (dataset, tokenizer, input length), so
a model is evaluated as it was trained unless an option says otherwise. A classifier carries its
label names (`ModelConfig.label_names`): a file's labels are matched by name, and a label the model
does not know is an error naming it (or, with `unknown_labels="wrong"`, a wrong answer).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from frugalformers.checkpoint import load as load_model
from frugalformers.data.tasks import load_task, load_user_rows, score, task_info
from frugalformers.files import atomic_write
from frugalformers.generate import generate
from frugalformers.train.answer_loss import answer_losses
from frugalformers.train.batches import TaskBatches, load_tokenizer
from frugalformers.train.run import resolve_checkpoint, task_predict
from frugalformers.train.user_data import FILE_METRICS, unknown_labels

SPLITS = ("train", "validation", "test")


@dataclass
class RunSettings:
    """What a checkpoint's run was trained with (defaults where it is not in a run folder)."""

    dataset: str = "demo"
    tokenizer: str = "tiny"
    seq_len: int = 128
    target_len: int = 32
    found: bool = False
    metric: str = "accuracy"  # how its own file was scored (data.metric)


def run_settings(ckpt: Path) -> RunSettings:
    """The data settings of the run a checkpoint belongs to (`RUN/checkpoints/step-N/`)."""
    saved = ckpt.parent.parent / "config.yaml" if ckpt.parent.name == "checkpoints" else None
    if saved is None or not saved.exists():
        return RunSettings()
    from omegaconf import OmegaConf

    d = OmegaConf.to_container(OmegaConf.load(saved)).get("data", {})
    return RunSettings(d.get("dataset", "demo"), d.get("tokenizer", "tiny"), d.get("seq_len", 128),
                       d.get("target_len", 32), True, d.get("metric", "accuracy"))  # fmt: skip


def _classifier_or_generator(model, checkpoint: str, what: str) -> None:
    c = model.config
    if c.family == "bert" and c.head != "classify":
        raise ValueError(
            f"{checkpoint} is a {'masked-LM' if c.head == 'mlm' else repr(c.head)} checkpoint, not a classifier: "
            f"fine-tune it first (frugal finetune ... init_from={checkpoint}), then {what} the fine-tuned run"
        )


def _setup(checkpoint: str, dataset, tokenizer, seq_len, target_len=None):
    ckpt = resolve_checkpoint(checkpoint)
    model = load_model(ckpt).eval()
    run = run_settings(ckpt)
    dataset, tokenizer = dataset or run.dataset, tokenizer or run.tokenizer
    tok = load_tokenizer(dataset, tokenizer)
    return model, tok, dataset, seq_len or run.seq_len, target_len or run.target_len, run.metric


def _labels(model, rows: list[dict], path: str) -> list[str]:
    names = model.config.label_names
    if model.config.family != "bert":
        return sorted({r["label"] for r in rows if "label" in r})
    if names is None:  # fine-tuned before label names were stored: the old rule, said aloud
        names = sorted({r["label"] for r in rows if "label" in r})
        if len(names) != model.config.num_labels:
            raise ValueError(
                f"{path}: the checkpoint stores no label names and classifies {model.config.num_labels} labels, "
                f"the file has {len(names)}; fine-tune again to store them"
            )
    return list(names)


def evaluate_checkpoint(
    checkpoint: str,
    task: str | None = None,
    dataset: str | None = None,
    split: str | None = None,
    file: str | None = None,
    tokenizer: str | None = None,
    seq_len: int | None = None,
    unknown: str = "error",
    metric: str | None = None,
) -> dict:
    """Score a checkpoint on every row of `file`, or on `split` (default test) of a prepared task.
    A file is scored by `metric` (default: the run's `data.metric`, accuracy for runs without one)."""
    if bool(task) == bool(file):
        raise ValueError("give --task TASK (a prepared dataset's) or --file FILE (your CSV / JSONL), one of them")
    if file and split:
        raise ValueError("--split applies to a prepared task (--task); a --file is scored whole")
    if unknown not in ("error", "wrong"):
        raise ValueError(f"--unknown-labels={unknown!r} is not 'error' or 'wrong'")
    if metric and not file:
        raise ValueError(f"--metric goes with --file; task {task!r} is scored by its own metric: leave it out")
    if metric and metric not in FILE_METRICS:
        raise ValueError(f"--metric={metric!r} is not one of {', '.join(FILE_METRICS)}")
    model, tok, dataset, seq_len, target_len, run_metric = _setup(checkpoint, dataset, tokenizer, seq_len)
    _classifier_or_generator(model, checkpoint, "evaluate")
    if file:
        rows = [{**r, "label": r["label"].strip()} for r in load_user_rows(file) if "label" in r]
        if not rows:
            raise ValueError(f"{file}: no row has a `label` to score against; `frugal predict` labels a file")
        labels, metric, split = _labels(model, rows, file), metric or run_metric, "file"
        if unknown == "error" and model.config.family == "bert":
            unknown_labels(file, rows, labels)
    else:
        split = split or "test"
        info = task_info(dataset, task)
        rows = load_task(dataset, task, split)
        labels, metric = (
            (list(model.config.label_names or []) or info["labels"] or _labels(model, rows, task)),
            info["metric"],
        )
    batches = TaskBatches(model.config, {"test": rows}, labels, tok, seq_len, target_len, 32, 0)
    with torch.no_grad():
        preds, golds = task_predict(model, batches, "test")
    return {"checkpoint": str(checkpoint), "task": task or file, "split": split, "n": len(golds),
            "seq_len": seq_len, **score(metric, preds, golds), **answer_losses(model, batches, "test")}  # fmt: skip


def predict_file(
    checkpoint: str,
    file: str,
    out: str | None = None,
    dataset: str | None = None,
    tokenizer: str | None = None,
    seq_len: int | None = None,
) -> list[dict]:
    """Labels (and, for classifiers, each label's probability) for every row of a CSV / JSONL file;
    written to `out` (.csv or .jsonl, never over an existing file) when given."""
    if out and Path(out).exists():
        raise ValueError(f"--out {out} exists; choose another file (frugal never overwrites one)")
    if out and Path(out).suffix not in (".csv", ".jsonl"):
        raise ValueError(f"--out {out}: write a .csv or a .jsonl file")
    model, tok, _, seq_len, target_len, _ = _setup(checkpoint, dataset, tokenizer, seq_len)
    _classifier_or_generator(model, checkpoint, "predict with")
    rows = load_user_rows(file)
    results = []
    if model.config.family == "bert":
        labels = _labels(model, rows, file)
        batches = TaskBatches(model.config, {"test": rows}, labels, tok, seq_len, target_len, 32, 0)
        items = batches.split_items("test")
        with torch.no_grad():
            for i in range(0, len(items), 32):
                b = {k: v for k, v in batches.make(items[i : i + 32]).items() if k != "labels"}
                probs = model(**b).logits.float().softmax(-1)
                for p in probs.tolist():
                    best = max(range(len(labels)), key=lambda j: p[j])
                    results.append(
                        {"prediction": labels[best], **{f"p_{lab}": round(q, 6) for lab, q in zip(labels, p)}}
                    )
    else:
        batches = TaskBatches(model.config, {"test": rows}, [], tok, seq_len, target_len, 32, 0)
        with torch.no_grad():
            preds, _ = task_predict(model, batches, "test")
        results = [{"prediction": p} for p in preds]
    results = [{"text": r["text"], **({"text_b": r["text_b"]} if "text_b" in r else {}), **p}
               for r, p in zip(rows, results)]  # fmt: skip
    if out:
        _write_rows(Path(out), results)
    return results


def _write_rows(path: Path, rows: list[dict]) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            if path.suffix == ".jsonl":
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
                return
            w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)


def generate_text(
    checkpoint: str,
    prompts: list[str],
    dataset: str,
    tokenizer: str,
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    seed: int,
    device: str = "auto",
    compile: bool = False,
    decode_options: dict | None = None,
) -> list[str]:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(resolve_checkpoint(checkpoint), device=device).eval()
    if model.config.family == "bert":
        raise ValueError(
            f"{checkpoint} is an encoder ({model.config.head!r} head), which does not generate text: "
            f"use a decoder (llama-*) or T5 checkpoint"
        )
    tok = load_tokenizer(dataset, tokenizer)
    ids = [tok.encode(p) for p in prompts]
    if model.config.family == "t5":
        ids = [i + [tok.eos_id] for i in ids]
    outs = generate(
        model,
        ids,
        max_new_tokens,
        eos_id=tok.eos_id,
        pad_id=tok.pad_id,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        compile=compile,
        word_ids=[tok.word_ids(i).tolist() for i in ids] if model.config.routes_words() else None,
        decoder_word_id=tok.last_word_id if model.config.routes_decoder_words() else None,
        decode_options=decode_options,
    )
    return [
        json.dumps({"prompt": p, "output": tok.decode([t for t in o if t != tok.eos_id])})
        for p, o in zip(prompts, outs)
    ]
