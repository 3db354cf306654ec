"""`frugal uptrain`: continue pretraining a converted (GQA / MQA) model for a fraction alpha of the
original run's steps with the original recipe (GQA paper, section 2.1: alpha = 0.05), reporting
the validation loss of the original model, of the converted model before uptraining, and after."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from frugalformers.checkpoint import load as load_model
from frugalformers.train.batches import PretrainBatches, pretrain_batches
from frugalformers.train.config import load_run_config
from frugalformers.train.run import pretrain, pretrain_eval, resolve_checkpoint


def _valid_loss(model, batches: PretrainBatches, n: int) -> float:
    model.eval()
    with torch.no_grad():
        return pretrain_eval(batches, n)(model)["loss"]


def uptrain(
    converted: str, original_run: str | None, alpha: float, overrides: list[str], progress: bool = True, log=print
) -> dict:
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha={alpha} must be in (0, 1]")
    if original_run:
        recipe = Path(original_run) / "config.yaml"
        if not recipe.exists():
            raise ValueError(f"{original_run} has no config.yaml: pass the original model's run folder")
        base = load_run_config(None, str(recipe), [o for o in overrides if not o.startswith("steps=")])
    else:
        if not any(o.startswith("preset=") or o.startswith("steps=") for o in overrides):
            raise ValueError(
                "without --original-run, give the recipe as overrides: preset=NAME steps=N (the "
                "original run's steps) and its data.* / optim.* settings"
            )
        base = load_run_config(None, None, overrides)
    steps = max(1, math.ceil(alpha * base.steps))
    out = next((o.split("=", 1)[1] for o in overrides if o.startswith("out=")), str(Path(converted)) + "-uptrained")
    cfg = base
    cfg.steps, cfg.init_from, cfg.out = steps, str(converted), out
    cfg.save_every = min(cfg.save_every or steps, steps)
    cfg.eval_every = min(cfg.eval_every or steps, steps)
    if cfg.optim.warmup_steps is not None:  # (a fraction scales with the uptraining's steps by itself)
        cfg.optim.warmup_steps = min(cfg.optim.warmup_steps, max(1, steps // 10))
    model = load_model(resolve_checkpoint(converted))
    batches = pretrain_batches(cfg, model.config)
    report = {"steps": steps, "alpha": alpha, "kv_heads": model.config.kv_heads}
    if original_run:
        report["loss_original"] = _valid_loss(load_model(resolve_checkpoint(original_run)), batches, cfg.eval_batches)
    report["loss_converted"] = _valid_loss(model, batches, cfg.eval_batches)
    log(f"uptraining {converted} for {steps} steps (alpha {alpha} of {base.steps}) -> {out}")
    result = pretrain(cfg, progress=progress, log=log)
    report["loss_uptrained"] = result["valid_loss"]
    report["out"] = out
    return report
