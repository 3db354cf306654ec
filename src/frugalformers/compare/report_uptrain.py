"""The report of a GQA uptraining study (`study: uptrain`): held-out loss of every conversion and
uptraining against the multi-head model continued alike, one table per uptraining rate, the
decode step of each kv-head count, and the GQA paper's Figures 3 and 4 as plots."""

from __future__ import annotations

import math
from pathlib import Path

from frugalformers.compare.markdown import num as _num
from frugalformers.compare.markdown import table as _table
from frugalformers.compare.plan import alpha_tag, uptrain_lrs, variant_name
from frugalformers.compare.recipe import Recipe
from frugalformers.presets import get_preset


def uptrain_rows(recipe: Recipe, results: dict, lr: float | None = None) -> list[dict]:
    """One row per variant: held-out loss per alpha for uptraining at peak rate `lr` (None: the
    recipe's), its distance from the multi-head model continued alike, the decode step."""

    m = recipe.models[0]
    up = recipe.uptrain
    n_heads = get_preset(m.preset).replace(**recipe.model_overrides(m)).n_heads
    variants = [(None, None)] + [(g, meth) for g in up.kv_heads for meth in up.methods]
    decode = {r["kv_heads"]: r for k, r in results.items() if k.startswith("decode/")}
    rows = []
    for g, meth in variants:
        name = variant_name(g, meth, n_heads)
        row = {"variant": name, "kv_heads": g or n_heads, "method": meth or "-", "loss": {}}
        for a in up.alphas:
            r = results.get(f"uptrain/{name}/{alpha_tag(a, lr)}")
            row["loss"][a] = r["loss"] if r else None
        d = decode.get(g or n_heads)
        row["ms_per_step"] = d["ms_per_step"] if d else None
        rows.append(row)
    mha = rows[0]
    for row in rows:
        row["vs_mha_percent"] = {
            a: 100 * (row["loss"][a] / mha["loss"][a] - 1) if row["loss"][a] and mha["loss"][a] else None
            for a in up.alphas
        }
        if row["ms_per_step"] and mha["ms_per_step"]:
            row["decode_speedup"] = mha["ms_per_step"] / row["ms_per_step"]
    return rows


def uptrain_report(recipe: Recipe, run_dir: Path, results: dict) -> tuple[str, dict]:
    up = recipe.uptrain
    lrs = uptrain_lrs(recipe)
    pre = results.get(f"pretrain/{recipe.models[0].label}")
    unigram = results.get("baseline/unigram")
    lines, tables = [], []
    for lr in lrs:
        rows = uptrain_rows(recipe, results, lr)
        if len(lrs) > 1:
            lines += [f"Uptraining at peak learning rate {lr:g}:", ""]
        lines += [_uptrain_table(up, rows), ""]
        tables.append({"lr": lr, "rows": rows})
        _plot_uptrain(recipe, rows, run_dir, "" if lr == lrs[0] else f"_lr{lr:g}")
    if pre:
        lines.append(
            f"The multi-head model: {pre['params']:,} parameters, {pre['steps']} steps ({pre['tokens']:,} tokens), "
            f"held-out loss {pre['initial_valid_loss']:.3f} untrained -> {pre['valid_loss']:.3f}."
        )
    if unigram:
        lines.append(f"Unigram baseline on the same held-out text: loss {unigram['valid_loss']:.3f}.")
    decode = next((r for k, r in results.items() if k.startswith("decode/")), None)
    how = "not measured yet"
    if decode:
        cuda = "CUDA" in decode["device"]
        how = (
            f"one step at batch {decode['batch_size']}, {decode['context']} cached positions, "
            + ("compiled, " if decode["compile"] else "eager, ")
            + ("CUDA-graph replays" if cuda else "host clock")
            + " (median), same run"
        )
    rate = (
        "the original recipe's schedule at its peak rate"
        if lrs == [None]
        else "the original recipe's warm-up and schedule at the peak rate named above each table"
    )
    lines.append(
        "alpha: uptraining steps as a fraction of the original run's, with "
        + rate
        + " (alpha 0: converted, not uptrained; the MHA row at alpha > 0 is the original model continued for the "
        f"same steps, the fair reference). Held-out loss over {up.eval_batches} batches. Decode: {how}."
    )
    data = {"rows": tables[0]["rows"], "by_lr": tables, "pretrain": pre, "unigram": unigram}
    return "\n".join(lines), data


def _uptrain_table(up, rows: list[dict]) -> str:
    cols = ["variant", "kv heads", "method"] + [f"loss, alpha {a:g} (vs MHA)" for a in up.alphas]
    cols += [f"ppl, alpha {max(up.alphas):g}", "decode ms/step", "decode speed vs MHA"]
    body = []
    for r in rows:
        cells = [r["variant"], str(r["kv_heads"]), r["method"]]
        for a in up.alphas:
            loss, rel = r["loss"][a], r["vs_mha_percent"][a]
            cells.append("-" if loss is None else f"{loss:.4f}" + ("" if r is rows[0] else f" ({rel:+.2f}%)"))
        last = r["loss"][max(up.alphas)]
        cells += [
            _num(math.exp(last) if last else None, "{:.2f}"),
            _num(r["ms_per_step"]),
            _num(r.get("decode_speedup"), "{:.2f}x"),
        ]
        body.append(cells)
    return _table(cols, body)


def _plot_uptrain(recipe: Recipe, rows: list[dict], run_dir: Path, suffix: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    up = recipe.uptrain
    target = min(up.alphas, key=lambda a: abs(a - 0.05))
    pts = [r for r in rows if r["ms_per_step"] and r["loss"].get(target) and r["method"] in ("-", "mean")]
    if pts:
        fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
        for r in pts:
            ax.scatter(r["ms_per_step"], r["loss"][target], s=40)
            ax.annotate(r["variant"], (r["ms_per_step"], r["loss"][target]), textcoords="offset points", xytext=(5, 4))
        ax.set_xlabel("decode time per step (ms)")
        ax.set_ylabel(f"held-out loss after uptraining (alpha {target:g})")
        ax.set_title(f"{recipe.name}{suffix.replace('_', ' ')}: quality against decode time (GQA Figure 3)")
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(run_dir / f"quality_vs_time{suffix}.png")
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    for r in rows:
        xs = [a for a in up.alphas if r["loss"].get(a) is not None]
        if xs:
            ax.plot(xs, [r["loss"][a] for a in xs], marker="o", label=r["variant"])
    ax.set_xlabel("uptraining steps / original steps (alpha)")
    ax.set_ylabel("held-out loss")
    ax.set_title(f"{recipe.name}{suffix.replace('_', ' ')}: quality against uptraining (GQA Figure 4)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(run_dir / f"quality_vs_alpha{suffix}.png")
    plt.close(fig)
