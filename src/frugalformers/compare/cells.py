"""Running one cell of a comparison. Each function trains or measures, and returns the cell's
result (a JSON-able dict); the runner writes it to `cells/KEY/result.json` when it is complete."""

from __future__ import annotations

import json
import math
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from frugalformers.api import build_model, count_parameters
from frugalformers.bench.decode import decode_step_time
from frugalformers.bench.report import hardware
from frugalformers.bench.steps import compiled, step_fns
from frugalformers.bench.timing import measure
from frugalformers.checkpoint import load as load_model
from frugalformers.checkpoint import save as save_model
from frugalformers.compare.cloze import cloze_set, score_cloze
from frugalformers.compare.plan import SCRATCH, Cell, finetune_steps
from frugalformers.compare.recipe import Recipe, dotted
from frugalformers.convert.gqa import convert_model
from frugalformers.data.tasks import load_task, score, task_info
from frugalformers.presets import get_preset
from frugalformers.train.batches import load_tokenizer, pretrain_batches
from frugalformers.train.checkpointing import list_checkpoints
from frugalformers.train.config import load_run_config
from frugalformers.train.logger import read_metrics
from frugalformers.train.run import finetune, pretrain, pretrain_eval
from frugalformers.train.trainer import autocast_for, pick_device

Log = Callable[[str], None]


def cell_dir(run_dir: Path, key: str) -> Path:
    return Path(run_dir) / "cells" / key


def pretrain_config(recipe: Recipe, label: str, out: Path | None = None):
    m = recipe.entry(label)
    extra = [f"out={out}"] if out is not None else []
    return load_run_config(m.preset, None, recipe.pretrain_options(m) + extra)


def tokenizer_name(recipe: Recipe) -> str:
    """The pretraining data's tokenizer as `DATASET/NAME` (what fine-tuning on a task suite uses);
    a pretraining tokenizer named `DATASET/NAME` already (a mixture's, e.g. `corpus/tiny`) is that."""
    tok = recipe.pretrain_tokenizer
    return recipe.finetune.tokenizer or (tok if "/" in tok else f"{recipe.pretrain_dataset}/{tok}")


# ------------------------------------------------------------------ baselines
def run_unigram(recipe: Recipe, cell: Cell, folder: Path, log: Log, run_dir: Path) -> dict:
    """The trivial baseline of the pretraining objective: predict every target from the training
    tokens' unigram frequencies (add-one smoothed), on the same held-out batches as the models."""
    return unigram_baseline(pretrain_config(recipe, recipe.models[0].label))


def unigram_baseline(cfg) -> dict:
    """`run_unigram` for one pretraining RunConfig: {objective, valid_loss, valid_accuracy}."""
    tok = load_tokenizer(cfg.data.dataset, cfg.data.tokenizer)
    config = get_preset(cfg.preset).replace(**{**cfg.model, "vocab_size": max(tok.vocab_size, 8)})
    batches = pretrain_batches(cfg, config)
    counts = np.bincount(np.asarray(batches.train_tokens), minlength=config.vocab_size).astype(np.float64) + 1.0
    logp = torch.from_numpy(np.log(counts / counts.sum()))
    best = int(logp.argmax())
    loss, correct, n = 0.0, 0, 0
    for b in batches.eval_batches(cfg.eval_batches):
        labels = b["labels"][:, 1:] if batches.objective == "clm" else b["labels"]
        target = labels[labels != -100]
        loss += float(-logp[target].sum())
        correct += int((target == best).sum())
        n += target.numel()
    return {"objective": batches.objective, "valid_loss": loss / max(n, 1), "valid_accuracy": correct / max(n, 1)}


# ------------------------------------------------------------------ pretraining
def run_pretrain(recipe: Recipe, cell: Cell, folder: Path, log: Log, run_dir: Path) -> dict:
    cfg = pretrain_config(recipe, cell.args["label"], folder)
    cfg.eval_at_start = True
    cfg.keep_last = 1
    resume = bool(list_checkpoints(folder))  # an interrupted cell continues from its checkpoint
    t0 = time.time()
    result = pretrain(cfg, resume=resume, log=log, progress=False)
    records = read_metrics(folder)
    evals = [r for r in records if "valid_loss" in r]
    speeds = [r["tokens_per_s"] for r in records if "tokens_per_s" in r][1:]  # the first interval compiles
    acc_key = next((k for k in result if k.startswith("valid_") and k.endswith("accuracy")), None)
    model = load_model(list_checkpoints(folder)[-1])
    tokens = cfg.steps * cfg.data.batch_size * cfg.optim.accumulation * cfg.data.seq_len
    return {
        "label": cell.args["label"],
        "preset": cfg.preset,
        "params": count_parameters(model),
        "steps": cfg.steps,
        "tokens": tokens,
        "initial_valid_loss": evals[0]["valid_loss"] if evals and evals[0]["step"] == 0 else None,
        "valid_loss": result["valid_loss"],
        "valid_accuracy": result.get(acc_key) if acc_key else None,
        "accuracy_name": acc_key.removeprefix("valid_") if acc_key else None,
        "logged_tokens_per_s": statistics.median(speeds) if speeds else None,
        "seconds": time.time() - t0,
        "resumed": resume,
        "device": hardware(),
    }


# ------------------------------------------------------------------ what pretraining stored
CLOZE_TRAIN_SENTENCES = 1000  # sentences of the training questions' facts scored beside the test ones


def run_cloze(recipe: Recipe, cell: Cell, folder: Path, log: Log, run_dir: Path) -> dict:
    """The pretrained model (no fine-tuning) on the knowledge facts as span-corruption cloze:
    the facts the test questions ask about, and a sample of the training questions' facts."""
    label = cell.args["label"]
    cfg = pretrain_config(recipe, label)
    device = pick_device(cfg)
    model = load_model(list_checkpoints(cell_dir(run_dir, f"pretrain/{label}"))[-1]).to(device)
    tok = load_tokenizer(cfg.data.dataset, cfg.data.tokenizer)
    amp = autocast_for(cfg, device)
    out = {"label": label, "device": hardware()}
    n = recipe.cloze_sentences
    for split, limit in (("test", n), ("train", n or CLOZE_TRAIN_SENTENCES)):
        examples = cloze_set(tok, recipe.finetune.dataset, split, limit, seed=recipe.seed)
        out[split] = score_cloze(model, tok, examples, device, amp)
        log(f"cloze {label} {split}: exact {out[split]['exact']:.3f}, object nll {out[split]['nll']:.2f}")
    return out


# ------------------------------------------------------------------ fine-tuning
def finetune_config(recipe: Recipe, cell: Cell, run_dir: Path, folder: Path):
    """The run config of a fine-tuning cell: the shared recipe, the task's and the model's options."""

    a, spec = cell.args, recipe.finetune
    m = recipe.entry(a["label"])
    tok_name = tokenizer_name(recipe)
    opts = [
        f"seed={a['seed']}",
        f"data.dataset={spec.dataset}",
        f"data.task={a['task']}",
        f"data.tokenizer={tok_name}",
        "eval_every=0",
        "save_every=0",
        "save_final=false",
        f"out={folder}",
        *dotted(spec.run),
        *dotted(spec.task_options(a["task"])),
        *dotted(m.finetune),
        *([f"optim.lr={a['lr']}"] if a.get("lr") else []),
    ]
    if a["scratch"]:  # the preset as pretraining would build it, with the tokenizer's vocabulary
        vocab = load_tokenizer(spec.dataset, tok_name).vocab_size
        opts += dotted({"model": {**recipe.model_overrides(m), "vocab_size": vocab}})
    else:
        opts.append(f"init_from={cell_dir(run_dir, f'pretrain/{m.label}')}")
    cfg = load_run_config(m.preset, None, opts)
    n_train = task_info(spec.dataset, a["task"])["sizes"]["train"]
    steps_given = any(o.startswith("steps=") for o in dotted(spec.task_options(a["task"])) + dotted(m.finetune))
    if not steps_given:
        cfg.steps = finetune_steps(n_train, cfg.data.batch_size, spec.epochs, spec.min_steps, spec.max_steps)
    return cfg


def run_finetune(recipe: Recipe, cell: Cell, folder: Path, log: Log, run_dir: Path) -> dict:
    a, spec = cell.args, recipe.finetune
    cfg = finetune_config(recipe, cell, run_dir, folder)
    t0 = time.time()
    result = finetune(cfg, log=log, progress=False)
    info = task_info(spec.dataset, a["task"])
    metric = info["metric"]
    main = "em" if metric == "em_f1" else metric
    out = {
        "label": a["label"] + (f"-{SCRATCH}" if a["scratch"] else ""),
        "task": a["task"],
        "seed": a["seed"],
        "metric": main,
        "score": result["test"][main],
        "test": result["test"],
        "valid": {k.removeprefix("valid_"): v for k, v in result.items() if k.startswith("valid_")},
        "lr": cfg.optim.lr,
        "steps": cfg.steps,
        "seconds": time.time() - t0,
        "device": hardware(),
    }
    preds = [json.loads(line) for line in (folder / "test_predictions.jsonl").read_text().splitlines()]
    out["predicted_classes"] = len({p["prediction"] for p in preds})
    if spec.breakdown:  # the score of each value of a row field (e.g. each relation)
        rows = load_task(spec.dataset, a["task"], "test")
        groups: dict[str, list[dict]] = {}
        for row, p in zip(rows, preds):
            groups.setdefault(str(row.get(spec.breakdown, "-")), []).append(p)
        out["breakdown"] = {
            k: score(metric, [p["prediction"] for p in v], [p["label"] for p in v])[main] for k, v in groups.items()
        }
    return out


def most_common_answers(train: list[dict], rows: list[dict], group: str | None = None) -> list[str]:
    """Each of `rows` answered with the most common label of the `train` rows, or with `group`, of
    the train rows of its own group (the overall one for a group that training lacks): the prior of
    a model that learned only the answer distribution."""
    top = Counter(r["label"] for r in train).most_common(1)[0][0]
    if not group:
        return [top] * len(rows)
    counts: dict[str, Counter] = {}
    for r in train:
        counts.setdefault(str(r.get(group, "-")), Counter())[r["label"]] += 1
    guess = {k: c.most_common(1)[0][0] for k, c in counts.items()}
    return [guess.get(str(r.get(group, "-")), top) for r in rows]


def majority_baseline(dataset: str, task: str, breakdown: str | None = None) -> dict:
    """The test score of always answering the training split's most common label (and, with
    `breakdown`, of the most common label within each group), in the task's metric."""
    metric = task_info(dataset, task)["metric"]
    main = "em" if metric == "em_f1" else metric
    train, test = load_task(dataset, task, "train"), load_task(dataset, task, "test")
    answers = most_common_answers(train, test)
    labels = [r["label"] for r in test]
    out = {"label": answers[0], "score": score(metric, answers, labels)[main]}
    if metric == "em_f1":  # the same question asked with several gold answers: one answer can match one
        golds: dict[tuple, Counter] = {}
        for r in test:
            golds.setdefault((r["text"], r.get("text_b")), Counter())[r["label"]] += 1
        out["ambiguous"] = sum(sum(c.values()) for c in golds.values() if len(c) > 1)
        out["ceiling"] = sum(max(c.values()) for c in golds.values()) / len(test)
    if breakdown:
        # every test row answered with its own group's most common label: per group, and over the whole
        # test set the prior a model that learned only the groups' answer distributions reaches
        every = most_common_answers(train, test, breakdown)
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(test):
            groups.setdefault(str(r.get(breakdown, "-")), []).append(i)
        out["breakdown"] = {
            k: score(metric, [every[i] for i in idx], [labels[i] for i in idx])[main] for k, idx in groups.items()
        }
        out["breakdown_all"] = score(metric, every, labels)[main]
    return out


# ------------------------------------------------------------------ speed
def run_speed(recipe: Recipe, cell: Cell, folder: Path, log: Log, run_dir: Path) -> dict:
    """Training (forward, backward, AdamW step on a pretraining batch, the objective's loss) and
    inference (the encoder's forward) tokens/s of one model, medians over repeats, on a device with
    nothing else running; with `speed.kind: encoder`, the encoder's time per example at each input
    length instead (`run_encoder_speed`)."""
    if recipe.speed.kind == "encoder":
        return run_encoder_speed(recipe, cell)

    cfg = pretrain_config(recipe, cell.args["label"])
    device = pick_device(cfg)
    spec = recipe.speed
    compile_ = cfg.compile if spec.compile is None else spec.compile
    batch = spec.batch_size or cfg.data.batch_size
    cfg.data.batch_size = batch
    if spec.seq_len:
        cfg.data.seq_len = spec.seq_len
    torch.manual_seed(recipe.seed)
    vocab = load_tokenizer(cfg.data.dataset, cfg.data.tokenizer).vocab_size
    model = build_model(cfg.preset, **{**cfg.model, "vocab_size": max(vocab, 8)}).to(device)
    batches = pretrain_batches(cfg, model.config)
    data = {k: v.to(device) for k, v in batches.next_batch().items()}  # a real batch of the objective
    amp = autocast_for(cfg, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    train_fwd = compiled(model, compile_)

    def train() -> None:
        model.train()
        with amp():
            out = train_fwd(**data)
        loss = out.loss.float() + sum(v.float() for v in out.aux_losses.values())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    inputs = {k: v for k, v in data.items() if k != "labels"}
    encoder = model.encoder if model.config.family == "bert" else model
    infer_fwd = compiled(encoder, compile_)

    def infer() -> None:
        encoder.eval()
        with torch.no_grad(), amp():
            infer_fwd(**inputs)

    t_train = measure(train, spec.warmup, spec.repeats, device)
    t_infer = measure(infer, spec.warmup, spec.repeats, device)
    tokens = batch * cfg.data.seq_len
    return {
        "label": cell.args["label"],
        "device": hardware(),
        "batch_size": batch,
        "seq_len": cfg.data.seq_len,
        "compile": bool(compile_),
        "train_ms": t_train.median_ms,
        "train_spread": t_train.spread,
        "infer_ms": t_infer.median_ms,
        "infer_spread": t_infer.spread,
        "train_tokens_per_s": tokens / t_train.median_ms * 1e3,
        "infer_tokens_per_s": tokens / t_infer.median_ms * 1e3,
        "peak_mem_gib": t_train.peak_mem_gib,
    }


def run_encoder_speed(recipe: Recipe, cell: Cell) -> dict:
    """The encoder alone (the model's `head="encoder"` form) at each length of `speed.lengths`:
    inference (no-grad forward) and a training step (forward, mean-square loss, backward, AdamW) on
    `speed.batch_size` examples (default 1) of random token ids, milliseconds per example, medians
    over repeats; as CoLT5's Table 8 and Figure 1 time long inputs (`speed.train_step: false`:
    inference only). A length that does not fit in memory is recorded as None."""

    cfg = pretrain_config(recipe, cell.args["label"])
    device = pick_device(cfg)
    spec = recipe.speed
    compile_ = cfg.compile if spec.compile is None else spec.compile
    lengths = spec.lengths or [cfg.data.seq_len]
    batch = spec.batch_size or 1
    vocab = load_tokenizer(cfg.data.dataset, cfg.data.tokenizer).vocab_size
    overrides = {**cfg.model, "vocab_size": max(vocab, 8), "max_seq_len": max(max(lengths), cfg.data.seq_len)}
    amp = autocast_for(cfg, device)
    infer_ms, train_ms, spreads = {}, {}, {}
    for n in lengths:
        torch.manual_seed(recipe.seed)
        model = build_model(cfg.preset, head="encoder", **overrides).to(device)
        ids = torch.randint(5, max(vocab, 8), (batch, n), device=device)  # (B, n)
        infer, train = step_fns(compiled(model, compile_), ids, amp)
        try:
            t_inf = measure(infer, spec.warmup, spec.repeats, device)
            infer_ms[str(n)], spreads[str(n)] = t_inf.median_ms / batch, t_inf.spread
            if spec.train_step:
                t_train = measure(train, spec.warmup, spec.repeats, device)
                train_ms[str(n)] = t_train.median_ms / batch
                spreads[str(n)] = max(t_inf.spread, t_train.spread)
        except torch.OutOfMemoryError:
            infer_ms[str(n)] = None
            if spec.train_step:
                train_ms[str(n)] = None
        del model, infer, train
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {
        "label": cell.args["label"],
        "device": hardware(),
        "batch_size": batch,
        "lengths": lengths,
        "compile": bool(compile_),
        "encoder_infer_ms_per_example": infer_ms,
        "encoder_train_ms_per_example": train_ms,
        "spread": spreads,
    }


# ------------------------------------------------------------------ GQA: conversion and uptraining
def run_uptrain(recipe: Recipe, cell: Cell, folder: Path, log: Log, run_dir: Path) -> dict:
    """Convert the pretrained multi-head model (kv_heads None: keep it), uptrain it for alpha of the
    original steps with the original recipe (alpha 0: not at all), and score it on held-out text.
    The uptraining draws its windows in a fresh order (seed + 1), the same for every variant."""

    a, up = cell.args, recipe.uptrain
    label = recipe.models[0].label
    pre_dir = cell_dir(run_dir, f"pretrain/{label}")
    base = pretrain_config(recipe, label)
    model = load_model(list_checkpoints(pre_dir)[-1])
    if a["kv_heads"] is not None:
        convert_model(model, a["kv_heads"], a["method"], seed=recipe.seed)
    eval_cfg = pretrain_config(recipe, label)
    batches = pretrain_batches(eval_cfg, model.config)
    evaluate = pretrain_eval(batches, up.eval_batches)
    device = pick_device(base)

    def held_out(m) -> float:
        m.to(device).eval()
        with torch.no_grad():
            return evaluate(m)["loss"]

    t0 = time.time()
    before = held_out(model)
    out = {"variant": a["variant"], "kv_heads": model.config.kv_heads, "method": a["method"], "alpha": a["alpha"]}
    out["lr"] = a.get("lr") or base.optim.lr
    out["loss_converted"] = before
    if a["alpha"] == 0:
        out.update(loss=before, steps=0)
    else:
        steps = max(1, math.ceil(a["alpha"] * base.steps))
        save_model(model.cpu(), folder / "converted")
        cfg = pretrain_config(recipe, label, folder / "run")
        cfg.steps, cfg.init_from, cfg.seed = steps, str(folder / "converted"), recipe.seed + 1
        cfg.save_every = cfg.eval_every = steps
        cfg.keep_last = 1
        cfg.model = {}  # the converted model's own config (its kv heads)
        cfg.compile = False  # a few hundred steps: compiling would cost more than it saves
        if a.get("lr") is not None:
            cfg.optim.lr = a["lr"]
        if cfg.optim.warmup_steps is not None:  # (a fraction scales with the uptraining's steps by itself)
            cfg.optim.warmup_steps = min(cfg.optim.warmup_steps, max(1, steps // 10))
        resume = bool(list_checkpoints(folder / "run"))
        pretrain(cfg, resume=resume, log=log, progress=False)
        trained = load_model(list_checkpoints(folder / "run")[-1])
        out.update(loss=held_out(trained), steps=steps)
    out["perplexity"] = math.exp(out["loss"])
    out["seconds"], out["device"] = time.time() - t0, hardware()
    return out


def run_decode(recipe: Recipe, cell: Cell, folder: Path, log: Log, run_dir: Path) -> dict:
    """The compiled decode step of the pretrained shape with `kv_heads` kv heads (random weights:
    a step's cost does not depend on them), one batch and cache length, CUDA-graph replays."""

    m = recipe.models[0]
    cfg = pretrain_config(recipe, m.label)
    device = pick_device(cfg)
    spec = recipe.speed
    batch = spec.batch_size or cfg.data.batch_size
    vocab = load_tokenizer(cfg.data.dataset, cfg.data.tokenizer).vocab_size
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build_model(cfg.preset, **{**cfg.model, "vocab_size": vocab, "n_kv_heads": cell.args["kv_heads"]})
    model = model.to(device=device, dtype=dtype).eval()
    cuda = device.type == "cuda"
    compile_ = (cfg.compile if spec.compile is None else spec.compile) and cuda
    ms = decode_step_time(model, batch, spec.context, device.type, cuda, spec.repeats, compile_)
    return {
        "variant": cell.args["variant"],
        "kv_heads": cell.args["kv_heads"],
        "device": hardware(),
        "batch_size": batch,
        "context": spec.context,
        "compile": bool(compile_),
        "ms_per_step": ms,
    }


RUNNERS = {
    "unigram": run_unigram,
    "pretrain": run_pretrain,
    "cloze": run_cloze,
    "finetune": run_finetune,
    "speed": run_speed,
    "uptrain": run_uptrain,
    "decode": run_decode,
}


def run_cell(recipe: Recipe, cell: Cell, run_dir: Path, log: Log) -> dict:
    folder = cell_dir(run_dir, cell.key)
    folder.mkdir(parents=True, exist_ok=True)
    return RUNNERS[cell.kind](recipe, cell, folder, log, run_dir)
