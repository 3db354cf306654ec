"""`frugal train` / `finetune` / `eval`: build the model and the batches for a run config, fit,
evaluate. A run folder holds `config.yaml` (resolved), `metrics.jsonl`, `checkpoints/`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from frugalformers.api import build_model
from frugalformers.bench.flops import flops_per_token
from frugalformers.checkpoint import load as load_model
from frugalformers.checkpoint import load_config
from frugalformers.convert.folders import model_folder
from frugalformers.data.tasks import score
from frugalformers.dist import env as dist_env
from frugalformers.dist.state import unsharded
from frugalformers.generate import generate
from frugalformers.nn.word_experts import WordExpertBank
from frugalformers.presets import get_preset
from frugalformers.train.answer_loss import answer_losses
from frugalformers.train.batches import (
    PretrainBatches,
    TaskBatches,
    load_tokenizer,
    pretrain_batches,
)
from frugalformers.train.checkpointing import list_checkpoints
from frugalformers.train.config import RunConfig, save_run_config
from frugalformers.train.run_folder import clear_run, run_folder
from frugalformers.train.trainer import fit, pick_device
from frugalformers.train.user_data import check_held_out_labels, one_class_warning, task_rows


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def model_for(cfg: RunConfig, **extra):
    overrides = {**cfg.model, **extra}
    return build_model(cfg.preset, **overrides)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder (its newest checkpoint)."""

    p = model_folder(path)
    if not (p / "config.json").exists():
        raise ValueError(f"{path} is neither a checkpoint folder nor a run folder with checkpoints")
    return p


# ------------------------------------------------------------------ pretraining
def pretrain_eval(batches: PretrainBatches, n: int):
    data = batches.eval_batches(n)

    def evaluate(model) -> dict:
        device = next(model.parameters()).device
        loss, correct, count = 0.0, 0, 0
        for b in data:
            b = {k: v.to(device) for k, v in b.items()}
            out = model(**b)
            loss += out.loss.float().item()
            labels = b["labels"]
            logits = out.logits
            if batches.objective == "clm":
                logits, labels = logits[:, :-1], labels[:, 1:]
            mask = labels != -100
            pred = logits.argmax(-1)
            pred = pred if pred.dim() == 1 else pred[mask]  # MLM returns logits of the masked positions only
            correct += (pred == labels[mask]).sum().item()
            count += mask.sum().item()
        name = {"mlm": "mlm_accuracy", "clm": "token_accuracy"}.get(batches.objective, "target_accuracy")
        return {"loss": loss / max(1, len(data)), name: correct / max(1, count)}

    return evaluate


def train_flops_per_token(config, batches: PretrainBatches) -> float:
    """Counted forward FLOPs per input token of a training batch. The MLM head runs on the masked
    positions only (15%), so it is counted at that share on top of the encoder."""

    if batches.objective != "mlm":
        return flops_per_token(config, batches.seq_len)
    body = flops_per_token(config.replace(head="base", pooler=False), batches.seq_len)
    d, e, v = config.d_model, config.embedding_dim, config.vocab_size
    return body + 0.15 * 2 * (d * e + e * v)


def _quiet(*a, **k) -> None:
    pass


def check_resume(cfg: RunConfig, run_dir: Path, config) -> None:
    """--resume continues the run in `out` as it was: the same preset, the same architecture
    (otherwise its checkpoints would not load and it would silently start again)."""

    saved = run_dir / "config.yaml"
    if saved.exists():
        from omegaconf import OmegaConf

        before = OmegaConf.load(saved).get("preset")
        if before and before != cfg.preset:
            raise ValueError(
                f"out={run_dir} holds a run of preset {before!r}, not {cfg.preset!r}: resume it with "
                f"--preset {before} (or leave --preset out: it is read from the run), or choose another out"
            )
    ckpts = list_checkpoints(run_dir)
    if ckpts:
        diff = config.architecture_differences(load_config(ckpts[-1]))
        if diff:
            raise ValueError(
                f"out={run_dir}: its checkpoint {ckpts[-1].name} is not this model ({'; '.join(diff)} for this run "
                f"vs the checkpoint); resume with the run's own settings, or choose another out"
            )


def _write_config(cfg: RunConfig, run_dir: Path, fresh: bool) -> None:
    """Once the model and data have been checked: clear a run being overwritten, write config.yaml
    (rank 0), and wait for the other ranks."""

    env = dist_env.current()
    if env.is_main:
        if fresh:
            clear_run(run_dir)
        save_run_config(cfg, run_dir / "config.yaml")
    dist_env.barrier(env)


def pretrain(cfg: RunConfig, resume: bool = False, log=print, progress: bool = True, overwrite: bool = False) -> dict:
    main = dist_env.current().is_main
    log = log if main else _quiet
    with run_folder(cfg.out, resume, overwrite, log, enabled=main) as run_dir:
        tok = load_tokenizer(cfg.data.dataset, cfg.data.tokenizer)
        seed_everything(cfg.seed)  # the model's initial weights depend on the seed alone
        if cfg.init_from:  # continue pretraining a saved model (e.g. uptraining a GQA conversion)
            model = load_model(resolve_checkpoint(cfg.init_from))
            if cfg.model:
                state = model.state_dict()
                model = build_model(model.config.replace(**cfg.model))
                model.load_state_dict(state)
        else:
            extra = {} if "vocab_size" in cfg.model else {"vocab_size": max(tok.vocab_size, 8)}
            model = model_for(cfg, **extra)
        if model.config.family == "bert" and cfg.data.seq_len > model.config.max_seq_len:
            raise ValueError(
                f"data.seq_len={cfg.data.seq_len} exceeds the model's max_seq_len={model.config.max_seq_len}"
            )
        batches = pretrain_batches(cfg, model.config)
        if resume:
            check_resume(cfg, run_dir, model.config)
        _write_config(cfg, run_dir, fresh=not resume)
        fpt = train_flops_per_token(model.config, batches) if pick_device(cfg).type == "cuda" else None
        log(
            f"pretraining {cfg.preset} ({batches.objective}) on {cfg.data.dataset}/{cfg.data.tokenizer}: "
            f"{cfg.steps} steps x {cfg.data.batch_size * cfg.optim.accumulation} x {cfg.data.seq_len} tokens "
            f"-> {run_dir}"
        )
        return fit(cfg, model, batches, pretrain_eval(batches, cfg.eval_batches), run_dir, resume, fpt, log, progress)


# ------------------------------------------------------------------ fine-tuning
def task_predict(model, batches: TaskBatches, split: str, limit: int | None = None) -> tuple[list[str], list[str]]:
    items = batches.split_items(split)[:limit]
    family = model.config.family
    device = next(model.parameters()).device
    preds, golds = [], []
    for i in range(0, len(items), batches.batch_size):
        chunk = items[i : i + batches.batch_size]
        golds += [lab for *_, lab in chunk]
        if family == "bert":
            b = {k: v.to(device) for k, v in batches.make(chunk).items() if k != "labels"}
            preds += [batches.labels[j] for j in model(**b).logits.argmax(-1).tolist()]
            continue
        tok = batches.tok
        if family == "t5":
            prompts = [(batches._source(a, b)[: batches.seq_len - 1] + [tok.eos_id]) for a, b, _, _ in chunk]
        else:
            prompts = [
                batches._source(a, b)[: batches.seq_len - batches.target_len - 1] + [tok.sep_id] for a, b, _, _ in chunk
            ]
        words = [tok.word_ids(p).tolist() for p in prompts] if batches.word_ids else None
        dec_words = tok.last_word_id if batches.decoder_words else None
        outs = generate(
            model,
            prompts,
            batches.target_len,
            eos_id=tok.eos_id,
            pad_id=tok.pad_id,
            word_ids=words,
            decoder_word_id=dec_words,
        )
        preds += [tok.decode([t for t in o if t != tok.eos_id]).strip() for o in outs]
    return preds, golds


def freeze_word_experts(model: torch.nn.Module) -> None:
    """Freeze every MoWE expert bank of `model` (dos Santos et al.: MoWE-Base fine-tunes to 37.7
    TriviaQA EM with its experts frozen, 33.5 with them trained); an error if it has none."""

    banks = [m for m in model.modules() if isinstance(m, WordExpertBank)]
    if not banks:
        raise ValueError("freeze_experts=true but the model has no MoWE expert bank: use a mowe preset or drop it")
    for bank in banks:
        bank.freeze()


def finetuned_model(cfg: RunConfig, labels: list[str], log):
    """The model to fine-tune: from `init_from` (checked against --preset) with a fresh classifier
    for the labels (encoders), or the preset from scratch."""

    wanted = get_preset(cfg.preset).replace(**cfg.model)
    encoder_head = {"head": "classify", "num_labels": len(labels), "label_names": tuple(labels)}
    if not cfg.init_from:
        return model_for(cfg, **(encoder_head if wanted.family == "bert" else {}))
    ckpt = resolve_checkpoint(cfg.init_from)
    base = load_model(ckpt)
    diff = wanted.architecture_differences(base.config, shapes_only=True)
    if diff:
        raise ValueError(
            f"init_from={cfg.init_from} is not a {cfg.preset!r} model ({'; '.join(diff)} for {cfg.preset} vs the "
            f"checkpoint); give the preset it was trained as, or leave --preset out (it is read from the run)"
        )
    config = base.config
    if config.family == "bert":
        model = build_model(config.replace(pooler=True, **encoder_head, **cfg.model))
        missing = model.load_state_dict(base.state_dict(), strict=False)
        new = sorted(k for k in missing.missing_keys if not k.startswith(("classifier", "encoder.pooler")))
        if new:
            raise ValueError(f"checkpoint {ckpt} lacks encoder weights: {new[:5]}")
        if cfg.rescale_embeddings:
            c = model.encoder.embeddings.rescale_(config.init_std)
            log(f"embedding tables scaled by {c:.3f} to std {config.init_std} (rescale_embeddings=true)")
    else:
        if cfg.rescale_embeddings:
            raise ValueError(
                f"rescale_embeddings=true is for encoders (bert, fnet, sparse-mixer presets); {cfg.init_from} is a "
                f"{config.family} model: leave it out"
            )
        model = base if not cfg.model else build_model(config.replace(**cfg.model))
        if cfg.model:
            model.load_state_dict(base.state_dict())
    log(f"fine-tuning from {ckpt}")
    return model


def finetune(cfg: RunConfig, resume: bool = False, log=print, progress: bool = True, overwrite: bool = False) -> dict:
    main = dist_env.current().is_main
    log = log if main else _quiet
    with run_folder(cfg.out, resume, overwrite, log, enabled=main) as run_dir:
        rows, labels, metric = task_rows(cfg)
        seed_everything(cfg.seed)
        model = finetuned_model(cfg, labels, log)
        if cfg.freeze_experts:
            freeze_word_experts(model)
            log("MoWE expert bank frozen (freeze_experts=true)")
        if metric == "em_f1" and model.config.family == "bert":
            raise ValueError(
                f"{cfg.data.task or cfg.data.file!r} has free-text answers (exact match / F1): fine-tune a generative "
                f"model (a t5 or decoder preset), not the encoder {cfg.preset!r}"
            )
        if model.config.family == "bert":
            check_held_out_labels(cfg, rows, labels)
        tok = load_tokenizer(cfg.data.dataset, cfg.data.tokenizer)
        if tok.vocab_size > model.config.vocab_size:
            raise ValueError(f"tokenizer has {tok.vocab_size} pieces but the model only {model.config.vocab_size}")
        batches = TaskBatches(
            model.config, rows, labels, tok, cfg.data.seq_len, cfg.data.target_len, cfg.data.batch_size, cfg.seed
        )
        if resume:
            check_resume(cfg, run_dir, model.config)
        _write_config(cfg, run_dir, fresh=not resume)
        last_valid: dict = {}

        limit = cfg.eval_batches * cfg.data.batch_size

        def evaluate(m) -> dict:
            preds, golds = task_predict(m, batches, "validation", limit=limit)
            last_valid["preds"] = preds
            # the answers' loss moves before exact match does (train/answer_loss.py)
            return {**score(metric, preds, golds), **answer_losses(m, batches, "validation", limit)}

        source = cfg.data.task or cfg.data.file
        if model.config.family == "bert":
            log(f"labels ({len(labels)}): {', '.join(labels)}")
        log(
            f"fine-tuning {model.config.family} model on {source} ({metric}), {len(rows['train'])} training and "
            f"{len(rows['validation'])} validation rows -> {run_dir}"
        )
        result = fit(cfg, model, batches, evaluate, run_dir, resume, None, log, progress)
        if model.config.family == "bert" and (warning := one_class_warning(last_valid.get("preds", []), labels)):
            log(warning)
        if not rows["test"]:  # a user's files without data.test_file: no test score
            return result
        model.eval()
        with torch.no_grad(), unsharded(model):
            preds, golds = task_predict(model, batches, "test")
            result["test"] = {**score(metric, preds, golds), **answer_losses(model, batches, "test")}
        if main:
            (run_dir / "test_metrics.json").write_text(json.dumps(result["test"], indent=2))
            with open(run_dir / "test_predictions.jsonl", "w", encoding="utf-8") as f:  # the test rows, in order
                for p, g in zip(preds, golds):
                    f.write(json.dumps({"label": g, "prediction": p}, ensure_ascii=False) + "\n")
        return result
