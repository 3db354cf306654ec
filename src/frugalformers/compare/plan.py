"""The cells of a comparison: each one unit of work whose result is cached in the run folder.

A cell has a key that is also its folder under `cells/` (`pretrain/bert-small`,
`finetune/fnet-small/isa/seed1`, `speed/bert-small`, `uptrain/gqa2-mean/a0.05`, ...), the cells it
needs first, and whether it must run alone (timings: nothing else on the device).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from frugalformers.compare.recipe import Recipe
from frugalformers.presets import get_preset

SCRATCH = "scratch"  # the suffix of a model's row without pretraining


@dataclass(frozen=True)
class Cell:
    key: str
    kind: str  # unigram | pretrain | finetune | speed | uptrain | decode
    args: dict = field(default_factory=dict, compare=False, hash=False)
    deps: tuple[str, ...] = ()
    exclusive: bool = False  # run with nothing else on the device (timings)

    def describe(self) -> str:
        a = self.args
        if self.kind == "finetune":
            lr = f" lr {a['lr']:g}" if a.get("lr") else ""
            scratch = " (no pretraining)" if a["scratch"] else ""
            return f"finetune {a['label']}{scratch} on {a['task']}{lr} seed {a['seed']}"
        if self.kind == "uptrain":
            return f"uptrain {a['variant']} alpha {a['alpha']:g}" + (f" lr {a['lr']:g}" if a.get("lr") else "")
        if self.kind in ("pretrain", "speed", "decode"):
            return f"{self.kind} {a.get('label', a.get('variant', ''))}"
        return self.kind


def alpha_tag(alpha: float, lr: float | None = None) -> str:
    """'a0.05', or 'a0.05/lr0.0001' for an uptraining at a peak rate of its own (alpha 0 has none)."""
    return f"a{alpha:g}" + (f"/lr{lr:g}" if lr is not None and alpha > 0 else "")


def lr_tag(lr: float | None) -> str:
    """'' for the run's own rate, 'lr0.0003/' for one of `finetune.lrs` (a folder level of its own)."""
    return "" if lr is None else f"lr{lr:g}/"


def uptrain_lrs(recipe: Recipe) -> list[float | None]:
    """The uptraining peak rates, one table each; [None]: the original recipe's."""
    return list(recipe.uptrain.lrs) or [None]


def variant_name(kv_heads: int | None, method: str | None, n_heads: int) -> str:
    """'mha', 'mqa-mean', 'gqa2-first' (kv heads in the name), as rows and folders."""
    if kv_heads is None or kv_heads == n_heads:
        return "mha"
    return f"{'mqa' if kv_heads == 1 else f'gqa{kv_heads}'}" + (f"-{method}" if method else "")


def finetune_steps(n_rows: int, batch_size: int, epochs: float, min_steps: int, max_steps: int) -> int:
    """epochs x rows / batch, clamped to [min_steps, max_steps]."""
    return int(min(max_steps, max(min_steps, math.ceil(epochs * n_rows / batch_size))))


def plan(recipe: Recipe) -> list[Cell]:
    """Every cell of the recipe, dependencies before dependants."""
    cells = [Cell("baseline/unigram", "unigram")]
    for m in recipe.models:
        cells.append(Cell(f"pretrain/{m.label}", "pretrain", {"label": m.label}))
    if recipe.study == "finetune":
        spec = recipe.finetune
        if recipe.cloze:  # what pretraining stored, before any fine-tuning
            for m in recipe.models:
                cells.append(Cell(f"cloze/{m.label}", "cloze", {"label": m.label}, (f"pretrain/{m.label}",)))
        for m in recipe.models:
            for scratch in (False, True) if spec.scratch else (False,):
                name = f"{m.label}-{SCRATCH}" if scratch else m.label
                deps = () if scratch else (f"pretrain/{m.label}",)
                for task in spec.tasks:
                    for lr in spec.lrs or [None]:
                        for seed in spec.seeds_for(task):
                            args = {"label": m.label, "task": task, "seed": seed, "scratch": scratch, "lr": lr}
                            key = f"finetune/{name}/{task}/{lr_tag(lr)}seed{seed}"
                            cells.append(Cell(key, "finetune", args, deps))
        if recipe.speed.kind != "none":
            for m in recipe.models:
                cells.append(Cell(f"speed/{m.label}", "speed", {"label": m.label}, exclusive=True))
    else:
        m = recipe.models[0]
        up = recipe.uptrain

        n_heads = get_preset(m.preset).replace(**recipe.model_overrides(m)).n_heads
        pre = (f"pretrain/{m.label}",)
        variants = [(None, None)] + [(g, method) for g in up.kv_heads for method in up.methods]
        for g, method in variants:
            name = variant_name(g, method, n_heads)
            for alpha in up.alphas:
                for lr in uptrain_lrs(recipe) if alpha > 0 else [None]:
                    args = {"variant": name, "kv_heads": g, "method": method, "alpha": alpha, "lr": lr}
                    cells.append(Cell(f"uptrain/{name}/{alpha_tag(alpha, lr)}", "uptrain", args, pre))
        if recipe.speed.kind != "none":
            for g in [n_heads, *up.kv_heads]:
                name = variant_name(g, None, n_heads)
                cells.append(Cell(f"decode/{name}", "decode", {"variant": name, "kv_heads": g}, exclusive=True))
    return cells
