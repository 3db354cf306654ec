"""`frugal eval` and `frugal generate` on saved checkpoints."""

from __future__ import annotations

import json

import torch

from frugalformers.checkpoint import load as load_model
from frugalformers.data.tasks import score
from frugalformers.generate import generate
from frugalformers.train.batches import TaskBatches, load_tokenizer
from frugalformers.train.config import RunConfig
from frugalformers.train.run import resolve_checkpoint, task_predict, task_rows


def evaluate_checkpoint(
    checkpoint: str, task: str | None, dataset: str, split: str, file: str | None, tokenizer: str, seq_len: int
) -> dict:
    model = load_model(resolve_checkpoint(checkpoint)).eval()
    cfg = RunConfig(preset="bert-tiny")
    cfg.data.dataset, cfg.data.task, cfg.data.file, cfg.data.seq_len = dataset, task, file, seq_len
    rows, labels, metric = task_rows(cfg)
    if model.config.family == "bert" and model.config.head == "classify" and model.config.num_labels != len(labels):
        raise ValueError(f"the checkpoint classifies {model.config.num_labels} labels, the task has {len(labels)}")
    tok = load_tokenizer(dataset, tokenizer)
    batches = TaskBatches(model.config, rows, labels, tok, seq_len, 32, 1 if len(rows["train"]) < 32 else 32, 0)
    with torch.no_grad():
        preds, golds = task_predict(model, batches, split)
    return {
        "checkpoint": str(checkpoint),
        "task": task or file,
        "split": split,
        "n": len(golds),
        **score(metric, preds, golds),
    }


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
