"""The training loop shared by pretraining and fine-tuning.

AdamW (weight decay on weight matrices only, not on biases, norms or embeddings; a MoWE bank with
row-sparse gradients updated lazily, `train.row_sparse_adamw`), warm-up + decay
schedule, gradient accumulation and clipping, bf16 autocast on CUDA / fp32 on CPU, optional
torch.compile, block aux losses added with `aux_loss_weight` and logged separately, periodic
evaluation with early stopping, atomic checkpoints with exact resume, NaN / inf steps skipped.

Under `torchrun` (see `frugalformers.dist`) the same loop runs on every rank: each takes its slice
of the global batch, the loss is the token-weighted mean over the whole global batch (each rank's
mean scaled by its share of the targets, so W ranks follow one process's trajectory), metrics are
reduced across ranks, evaluation results come from rank 0, and only rank 0 logs and writes
checkpoints (full tensors, loadable on any world size).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from frugalformers.bench.flops import peak_flops
from frugalformers.dist import env as dist_env
from frugalformers.dist.data_parallel import RankSlice, wrap_for_data_parallel
from frugalformers.dist.expert_parallel import shard_experts
from frugalformers.dist.state import (
    full_model_state,
    load_optimizer_state_by_name,
    optimizer_state_by_name,
    unsharded,
)
from frugalformers.nn.word_experts import WordExpertBank
from frugalformers.train.checkpointing import list_checkpoints, resume_latest, rng_state, save_checkpoint, set_rng_state
from frugalformers.train.config import RunConfig, warmup_steps
from frugalformers.train.logger import MetricsLogger
from frugalformers.train.nonfinite import clip_finite_grads, describe, nonfinite_report
from frugalformers.train.row_sparse_adamw import RowSparseAdamW, clip_grad_norm_, is_row_sparse
from frugalformers.train.schedule import make_scheduler


class TrainingStopped(RuntimeError):
    """Training stopped on purpose (too many bad steps); the message says why."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: the step reached and what the run folder holds to resume from."""

    def __init__(self, step: int, saved: str):
        super().__init__(f"interrupted at step {step}")
        self.step, self.saved = step, saved


def pick_device(cfg: RunConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA device is available; use device=cpu or device=auto")
    return torch.device(cfg.device)


def autocast_for(cfg: RunConfig, device: torch.device):
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    if not bf16:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def make_optimizer(
    model: torch.nn.Module, cfg: RunConfig, device: torch.device, fused: bool = True
) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and "embed" not in name and "position" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # row-sparse parameters (a MoWE bank with sparse_grad) are updated lazily, the rest by AdamW itself
    opt_class = RowSparseAdamW if any(is_row_sparse(p) for p in decay + no_decay) else torch.optim.AdamW
    return opt_class(
        groups,
        lr=cfg.optim.lr,
        betas=(cfg.optim.beta1, cfg.optim.beta2),
        eps=cfg.optim.eps,
        fused=fused and device.type == "cuda",
    )


def dense_bank_gradients(model: torch.nn.Module, log: Callable[[str], None]) -> None:
    """Under torchrun the MoWE bank's gradients are dense: DDP and FSDP all-reduce dense gradients
    only, and expert shards clip by dense norms. Said once when it changes a bank."""

    for m in model.modules():
        if isinstance(m, WordExpertBank) and m.sparse_grad:
            m.set_sparse_grad(False)
            log("note: the MoWE bank's gradients are dense under torchrun (options.mowe_sparse_grad: one process only)")


def expert_load(model: torch.nn.Module) -> dict[str, float]:
    """Per MoE layer, the busiest and idlest expert's share of routed slots times the number of
    experts (1.0 = perfectly balanced), from the last forward."""
    out = {}
    for name, m in model.named_modules():
        load = getattr(m, "last_load", None)
        if load is not None:
            key = name.replace("encoder.layers.", "L").replace(".ffn", "")
            out[f"moe/{key}/load_max"] = float(load.max()) * load.numel()
            out[f"moe/{key}/load_min"] = float(load.min()) * load.numel()
    return out


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def target_count(batch: dict, family: str) -> int:
    """How many targets the batch's mean loss averages over (labels != -100; one per row for
    classification; decoders predict tokens 1..T-1)."""
    labels = batch["labels"]
    if labels.dim() == 1:
        return labels.numel()
    if family == "decoder":
        labels = labels[:, 1:]
    return int((labels != -100).sum())


def fit(
    cfg: RunConfig,
    model: torch.nn.Module,
    batches,
    evaluate: Callable[[torch.nn.Module], dict],
    run_dir: Path,
    resume: bool = False,
    flops_per_token: float | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> dict:
    """Train `model` for cfg.steps optimizer steps; return the final metrics."""
    env = dist_env.current()
    device = env.device if env.distributed else pick_device(cfg)
    torch.manual_seed(cfg.seed)
    model.to(device)
    step, best, stale, bad_total = 0, None, 0, 0
    metrics = MetricsLogger(run_dir, enabled=env.is_main)  # only rank 0 writes
    state = resume_latest(run_dir, model, log) if resume else None  # full weights, before any sharding
    if resume and state is None:
        log(f"no checkpoint in {run_dir / 'checkpoints'}; starting from scratch")
    if not env.distributed and (cfg.expert_parallel or cfg.parallel != "ddp"):
        log("note: parallel / expert_parallel apply under torchrun only; this run has one process (use --nproc N)")
    if env.distributed:
        if cfg.expert_parallel:
            if not shard_experts(model):
                raise ValueError(f"expert_parallel=true but {cfg.preset!r} has no MoE or MoWE experts to shard")
        batches = RankSlice(batches, env)
        dense_bank_gradients(model, log)
    wrapped, grad_sync = wrap_for_data_parallel(model, cfg.parallel, env)
    optimizer = make_optimizer(model, cfg, device, fused=cfg.parallel != "fsdp" or not env.distributed)
    scheduler = make_scheduler(optimizer, warmup_steps(cfg), cfg.steps, cfg.optim.schedule)
    if state is not None:
        load_optimizer_state_by_name(model, optimizer, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        batches.load_state_dict(state["data"])
        set_rng_state(state["rng"])
        step, best, stale, bad_total = state["step"], state["best"], state["stale"], state["bad_total"]
        metrics.truncate_after(step)
        log(f"resumed from step {step}")
    amp = autocast_for(cfg, device)
    train_model = torch.compile(wrapped) if cfg.compile else wrapped
    no_sync = getattr(wrapped, "no_sync", None)  # DDP: skip the all-reduce on all but the last micro-batch
    family = model.config.family

    peak = peak_flops(device) if device.type == "cuda" else None

    def checkpoint() -> None:
        weights = full_model_state(model)  # collective when sharded
        optim_state = optimizer_state_by_name(model, optimizer)
        if env.is_main:
            state = {
                "optimizer": optim_state,
                "scheduler": scheduler.state_dict(),
                "data": batches.state_dict(),
                "rng": rng_state(),
                "step": step,
                "best": best,
                "stale": stale,
                "bad_total": bad_total,
            }
            save_checkpoint(run_dir, step, model, state, cfg.keep_last, weights)
        dist_env.barrier(env)

    def run_eval() -> dict:
        with unsharded(model) as plain:  # FSDP2: every rank evaluates with the full parameters
            plain.eval()
            with torch.no_grad(), amp():
                result = evaluate(plain)
            plain.train()
        return dist_env.broadcast_object(result, env)

    bar = tqdm(
        total=cfg.steps,
        initial=step,
        disable=not (progress and env.is_main),
        dynamic_ncols=True,
        desc=Path(run_dir).name,
    )
    if cfg.eval_at_start and step == 0:
        metrics.log({"step": 0, **{f"valid_{k}": v for k, v in run_eval().items()}})
    model.train()
    bad_run, t_last, tokens_since, last = 0, time.perf_counter(), 0, {}
    last_good = None  # the last updated step's loss and gradient norm, for a non-finite report
    stop_reason = None
    try:
        while step < cfg.steps:
            micro = [batches.next_batch() for _ in range(cfg.optim.accumulation)]
            counts = [target_count(b, family) for b in micro]
            total_count = float(dist_env.all_reduce_sum(torch.tensor(float(sum(counts)), device=device), env))
            loss_sum, aux_sums = torch.zeros((), device=device), {}
            for i, raw in enumerate(micro):
                batch = _to(raw, device)
                last_micro = i == len(micro) - 1
                sync_ctx = no_sync() if no_sync is not None and not last_micro else contextlib.nullcontext()
                with sync_ctx:
                    with amp():
                        out = train_model(**batch)
                    loss = out.loss.float()
                    aux = {k: v.float() for k, v in out.aux_losses.items()}
                    # this micro-batch's share of the global token mean (x W: data parallel averages over ranks)
                    share = counts[i] * env.world_size / max(total_count, 1.0)
                    total = loss * share
                    if aux:
                        total = total + cfg.aux_loss_weight * sum(aux.values()) / cfg.optim.accumulation
                    total.backward()
                loss_sum = loss_sum + loss.detach() * counts[i]
                for k, v in aux.items():
                    aux_sums[k] = aux_sums.get(k, 0.0) + v.detach() / cfg.optim.accumulation
                tokens_since += batches.tokens_per_batch  # the global batch's tokens
            if grad_sync is not None:
                grad_sync()
            loss_value = float(dist_env.all_reduce_sum(loss_sum, env)) / max(total_count, 1.0)
            if env.distributed and aux_sums:
                aux_sums = {k: dist_env.all_reduce_sum(v, env) / env.world_size for k, v in aux_sums.items()}
            if cfg.optim.grad_clip <= 0:
                grad_norm = torch.tensor(0.0)
            elif grad_sync is not None:  # expert shards differ per rank: the norm needs their all_reduce
                grad_norm = grad_sync.clip_grad_norm(cfg.optim.grad_clip)
            elif any(p.grad is not None and p.grad.is_sparse for p in model.parameters()):  # a MoWE bank's rows
                grad_norm = clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            else:
                grad_norm = clip_finite_grads(model, cfg.optim.grad_clip)
            norm_value = float(grad_norm)  # one device-to-host copy per step
            if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
                if bad_run == 0:  # the first of a streak: what went non-finite, for the log
                    report = nonfinite_report(model, loss_value, norm_value, last_good)
                    metrics.log({"step": step + 1, "nonfinite": report})
                    log(f"step {step + 1} skipped: {describe(report)}")
                optimizer.zero_grad(set_to_none=True)
                bad_run += 1
                bad_total += 1
                step += 1
                with warnings.catch_warnings():  # the schedule advances with the step count, update or not
                    warnings.simplefilter("ignore", UserWarning)
                    scheduler.step()
                metrics.log({"step": step, "skipped_nonfinite": 1, "bad_steps_total": bad_total})
                if bad_run >= cfg.max_bad_steps:
                    stop_reason = (
                        f"{bad_run} consecutive steps had a non-finite loss or gradient (last at step {step}); "
                        f"lower optim.lr, check the data, or raise max_bad_steps"
                    )
                    break
                bar.update(1)
                continue
            bad_run = 0
            last_good = {"step": step + 1, "loss": loss_value, "grad_norm": norm_value}
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                dt = time.perf_counter() - t_last
                tps = tokens_since / dt if dt > 0 else 0.0
                record = {
                    "step": step,
                    "loss": loss_value,
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": norm_value,
                    "tokens_per_s": tps,
                }
                record.update({f"aux/{k}": float(v) for k, v in aux_sums.items()})
                record.update(expert_load(model))
                if device.type == "cuda":
                    record["gpu_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
                if flops_per_token and peak:
                    record["mfu"] = 3 * flops_per_token * tps / peak
                metrics.log(record)
                bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{tps:,.0f}")
                t_last, tokens_since = time.perf_counter(), 0
            if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps:
                result = run_eval()
                last = {"step": step, **{f"valid_{k}": v for k, v in result.items()}}
                metrics.log(last)
                if cfg.early_stop_metric:
                    value = last.get(cfg.early_stop_metric)
                    if value is None:
                        raise ValueError(
                            f"early_stop_metric={cfg.early_stop_metric!r} is not logged; have {sorted(last)}"
                        )
                    better = best is None or (value < best if "loss" in cfg.early_stop_metric else value > best)
                    best, stale = (value, 0) if better else (best, stale + 1)
                    if stale >= cfg.early_stop_patience:
                        stop_reason = f"early stop: {cfg.early_stop_metric} did not improve for {stale} evaluations"
            final = (step == cfg.steps and cfg.save_final) or stop_reason
            if (cfg.save_every and step % cfg.save_every == 0) or final:
                checkpoint()
            if stop_reason:
                break
    except KeyboardInterrupt:
        bar.close()
        metrics.close()
        good = list_checkpoints(run_dir)
        raise TrainingInterrupted(
            step, f"the newest checkpoint is {good[-1].name}" if good else "no checkpoint was saved yet"
        ) from None
    bar.close()
    metrics.close()
    if stop_reason and "consecutive" in stop_reason:  # the diverged weights are not saved over the last good ones
        good = list_checkpoints(run_dir)
        kept = f"the newest checkpoint, {good[-1].name}, is from before it" if good else "no checkpoint was saved"
        raise TrainingStopped(f"{stop_reason}; {kept}")
    if stop_reason:
        log(stop_reason)
    return {**last, "step": step, "bad_steps": bad_total}
