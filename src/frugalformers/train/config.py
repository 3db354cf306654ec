"""Run configuration: a preset name, an optional YAML file, then `key=value` overrides.

Resolution order (later wins): the dataclass defaults below, the YAML file, the command-line
overrides. The schema is typed (OmegaConf structured config): an unknown key or a value of the
wrong type is an error that names the key. `model.*` keys are `ModelConfig` fields applied on top
of the preset. The resolved config is saved as `config.yaml` in the run folder.
"""

from __future__ import annotations

import difflib
import inspect
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from frugalformers.files import atomic_write
from frugalformers.options import help_text as block_help
from frugalformers.presets import get_preset


@dataclass
class DataSection:
    dataset: str = "demo"  # a prepared dataset (`frugal data list`) or a folder made by `frugal data pack`
    tokenizer: str = "tiny"  # tokenizer / shard set inside the dataset, or OTHER_DATASET/NAME (e.g. corpus/tiny)
    task: str | None = None  # fine-tuning: a task of the dataset (`frugal data show DATASET`)
    file: str | None = None  # fine-tuning: a user CSV / JSONL file (columns text, [text_b], label)
    valid_file: str | None = None  # with `file`: its validation rows (default: 10% of `file`, seeded)
    test_file: str | None = None  # with `file`: its test rows, scored at the end (test_metrics.json)
    metric: str = "accuracy"  # with `file`: accuracy | macro_f1 | em_f1 (free-text answers of t5 / decoder presets)
    seq_len: int = 128  # input length (encoders pad to it; pretraining windows have this length)
    target_len: int = 32  # seq2seq target length (span corruption, UL2, text-to-text fine-tuning)
    batch_size: int = 32
    mlm_rate: float = 0.15  # MLM: share of tokens predicted (BERT / FNet 0.15; Wettig et al. 2022: 0.4 for short runs)


@dataclass
class OptimSection:
    lr: float = 1e-3
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    warmup_steps: int | None = None  # linear warm-up steps (default: `warmup` x steps)
    warmup: float | None = None  # warm-up as a fraction of `steps` when warmup_steps is unset (default 0.06)
    schedule: str = "linear"  # linear | cosine | inverse_sqrt | constant (after warm-up)
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    accumulation: int = 1  # micro-batches per optimizer step


@dataclass
class RunConfig:
    preset: str = MISSING  # model preset (`frugal models`)
    objective: str = "auto"  # auto | mlm | span | ul2 | clm   (auto: mlm for bert, span for t5, clm for decoder)
    steps: int = 1000  # optimizer steps
    eval_every: int = 200  # steps between evaluations (0: only at the end)
    eval_batches: int = 20  # validation batches per evaluation
    eval_at_start: bool = False  # also evaluate the untrained model (step 0), e.g. to show what training bought
    save_every: int = 500  # steps between checkpoints (0: only at the end)
    keep_last: int = 2  # checkpoints kept
    save_final: bool = True  # write a checkpoint at the last step (false: benchmarks of huge models)
    log_every: int = 10
    early_stop_metric: str | None = None  # e.g. valid_loss or valid_accuracy; None disables
    early_stop_patience: int = 5  # evaluations without improvement before stopping
    max_bad_steps: int = 10  # consecutive NaN / inf losses before training stops
    aux_loss_weight: float = 1.0  # multiplies the sum of block aux losses (MoE balance, z-loss)
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    compile: bool = False  # torch.compile the model
    device: str = "auto"  # auto | cpu | cuda
    parallel: str = "ddp"  # under torchrun: ddp (replicate, all-reduce grads) | fsdp (FSDP2 fully_shard)
    expert_parallel: bool = False  # under torchrun: shard MoE / MoWE experts over the ranks (all_to_all)
    seed: int = 0
    out: str = "runs/default"  # run folder: config.yaml, metrics.jsonl, checkpoints/
    init_from: str | None = None  # fine-tuning: a checkpoint folder (or run folder) to start from
    freeze_experts: bool = False  # fine-tuning: freeze the MoWE expert bank (the paper: frozen experts do better)
    # fine-tuning an encoder from init_from: scale its embedding tables back to init_std (the function is
    # unchanged: they feed a LayerNorm); pretraining grows them, which slows what fine-tuning can move.
    # Without init_from the tables are at that scale already and nothing is done.
    rescale_embeddings: bool = False
    model: dict[str, Any] = field(default_factory=dict)  # ModelConfig overrides on top of the preset
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)


OBJECTIVES = ("auto", "mlm", "span", "ul2", "clm")
SCHEDULES = ("linear", "cosine", "inverse_sqrt", "constant")
PRECISIONS = ("auto", "fp32", "bf16")


def _all_keys() -> list[str]:
    keys = [f.name for f in fields(RunConfig)]
    keys += [f"data.{f.name}" for f in fields(DataSection)] + [f"optim.{f.name}" for f in fields(OptimSection)]
    return keys


def _read_yaml(path: Path):
    if not path.exists():
        raise ValueError(f"config file {str(path)!r} does not exist")
    try:
        loaded = OmegaConf.load(path)
    except OmegaConfBaseException:
        raise
    except Exception as e:  # the YAML parser's own errors
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ValueError(f"config file {path} is not valid YAML{at}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(loaded, DictConfig):
        raise ValueError(f"config file {path} must be a mapping of options (key: value), not a list or a value")
    return loaded


def preset_of_run(path: str | Path) -> str:
    """The preset a run (or a checkpoint inside a run) was trained with, from its config.yaml."""
    p = Path(path)
    for saved in (p / "config.yaml", p.parent.parent / "config.yaml"):
        if saved.exists():
            preset = OmegaConf.load(saved).get("preset")
            if preset:
                return str(preset)
    raise ValueError(f"{path} holds no run's config.yaml to take the preset from; pass --preset NAME")


def load_run_config(preset: str | None = None, yaml_file: str | None = None, overrides: list[str] = ()) -> RunConfig:
    """Resolve defaults <- YAML <- overrides into a validated `RunConfig`."""
    base = OmegaConf.structured(RunConfig)
    try:
        if yaml_file:
            base = OmegaConf.merge(base, _read_yaml(Path(yaml_file)))
        if preset:
            base = OmegaConf.merge(base, {"preset": preset})
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ValueError(f"overrides must look like key=value, got {bad}")
        base = OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or ""
        names = _all_keys()
        close = [] if key in names else difflib.get_close_matches(str(key), names, n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise ValueError(f"bad config key or value {key!r}: {str(e).splitlines()[0]}{hint}") from None
    if OmegaConf.is_missing(base, "preset"):
        raise ValueError("no model preset: pass --preset NAME (see `frugal models`) or set `preset:` in the YAML")
    cfg: RunConfig = OmegaConf.to_object(base)
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    get_preset(cfg.preset)
    checks = [
        (cfg.objective in OBJECTIVES, "objective", cfg.objective, f"one of {OBJECTIVES}"),
        (cfg.optim.schedule in SCHEDULES, "optim.schedule", cfg.optim.schedule, f"one of {SCHEDULES}"),
        (cfg.precision in PRECISIONS, "precision", cfg.precision, f"one of {PRECISIONS}"),
        (cfg.steps > 0, "steps", cfg.steps, "a positive integer"),
        (cfg.optim.lr > 0, "optim.lr", cfg.optim.lr, "positive"),
        (cfg.optim.accumulation >= 1, "optim.accumulation", cfg.optim.accumulation, ">= 1"),
        (
            cfg.optim.warmup_steps is None or cfg.optim.warmup_steps >= 0,
            "optim.warmup_steps",
            cfg.optim.warmup_steps,
            ">= 0",
        ),  # fmt: skip
        (
            cfg.optim.warmup is None or 0 <= cfg.optim.warmup < 1,
            "optim.warmup",
            cfg.optim.warmup,
            "a fraction in [0, 1)",
        ),
        (cfg.optim.grad_clip >= 0, "optim.grad_clip", cfg.optim.grad_clip, ">= 0 (0 disables)"),
        (cfg.data.batch_size > 0, "data.batch_size", cfg.data.batch_size, "positive"),
        (cfg.data.seq_len > 1, "data.seq_len", cfg.data.seq_len, "> 1"),
        (0 < cfg.data.mlm_rate < 1, "data.mlm_rate", cfg.data.mlm_rate, "a fraction in (0, 1)"),
        (cfg.keep_last >= 1, "keep_last", cfg.keep_last, ">= 1"),
        (cfg.device in ("auto", "cpu", "cuda"), "device", cfg.device, "auto, cpu or cuda"),
        (cfg.max_bad_steps >= 1, "max_bad_steps", cfg.max_bad_steps, ">= 1"),
        (cfg.parallel in ("ddp", "fsdp"), "parallel", cfg.parallel, "ddp or fsdp"),
    ]
    for ok, key, value, valid in checks:
        if not ok:
            raise ValueError(f"{key}={value!r} is not valid; use {valid}")
    if cfg.model:
        get_preset(cfg.preset).replace(**cfg.model)  # raises naming a bad model field


DEFAULT_WARMUP = 0.06  # a fraction of the run, so that short runs (fine-tuning) leave warm-up too


def warmup_steps(cfg: RunConfig) -> int:
    """Warm-up steps: `optim.warmup_steps` when set, else `optim.warmup` (default 0.06) x steps."""
    if cfg.optim.warmup_steps is not None:
        return cfg.optim.warmup_steps
    return round((DEFAULT_WARMUP if cfg.optim.warmup is None else cfg.optim.warmup) * cfg.steps)


def save_run_config(cfg: RunConfig, path: Path) -> None:
    text = OmegaConf.to_yaml(OmegaConf.structured(cfg))
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def help_text() -> str:
    """Every option with its default and comment, for `frugal train --help`."""
    lines = []
    for cls, prefix in ((RunConfig, ""), (DataSection, "data."), (OptimSection, "optim.")):
        src = inspect.getsource(cls)
        for m in re.finditer(r"^\s+(\w+): [^=\n]+= ([^#\n]+?)\s*(?:#\s*(.*))?$", src, re.M):
            name, default, comment = m.groups()
            if name in ("data", "optim"):
                continue
            default = default.replace("field(default_factory=dict)", "{}")
            lines.append(f"  {prefix + name:<26} {default:<12} {comment or ''}")
    lines += ["", "block options (model.options.KEY=VALUE; each overrides one key of the preset's):", block_help()]
    return "\n".join(lines)
