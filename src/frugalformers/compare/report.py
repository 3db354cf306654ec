"""The report of a comparison: `compare.md` (the table, verdicts, baselines, what each model did
differently, the hardware and the command), `compare.json` (every number, and every cell's
result) and the plots (`compare.png`: quality against training speed, as the FNet paper's
Figure 2; for GQA `quality_vs_time.png` and `quality_vs_alpha.png`, as its Figures 3 and 4)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from frugalformers.bench.report import hardware
from frugalformers.compare.cells import majority_baseline, pretrain_config
from frugalformers.compare.markdown import cell as _cell
from frugalformers.compare.markdown import mean_sd as _mean_sd
from frugalformers.compare.markdown import num as _num
from frugalformers.compare.markdown import table as _table
from frugalformers.compare.plan import SCRATCH, lr_tag, plan
from frugalformers.compare.recipe import Recipe
from frugalformers.compare.report_sections import answer_loss_table, breakdown_table, cloze_table, plot_breakdown
from frugalformers.compare.report_uptrain import uptrain_report
from frugalformers.data.shards import shard_path
from frugalformers.data.tasks import task_info

OBJECTIVE_NAMES = {"mlm": "MLM", "clm": "LM", "span": "span", "ul2": "UL2"}


def _hardware(results: dict, here: bool) -> str:
    devices = sorted({r["device"] for r in results.values() if isinstance(r, dict) and r.get("device")})
    if devices:
        return "; ".join(devices)
    return hardware() if here else "not recorded by the cells"


def write_report(recipe: Recipe, run_dir: Path, results: dict, command: str = "", here: bool = True) -> str:
    """Write compare.md / compare.json / the plots from the finished cells; return the markdown.
    `here`: the cells ran on this machine (else a cell that did not record its device is not
    credited to this one)."""
    if recipe.study == "uptrain":
        md, data = uptrain_report(recipe, run_dir, results)
    else:
        md, data = _finetune_report(recipe, run_dir, results)
    done = sum(1 for c in plan(recipe) if c.key in results)
    total = len(plan(recipe))
    head = f"# {recipe.name}\n\n{recipe.description.strip()}\n\n" if recipe.description else f"# {recipe.name}\n\n"
    tail = (
        f"\n\nCells: {done} of {total} done. Hardware: {_hardware(results, here)}. "
        f"Command: `{command or 'frugal compare ' + recipe.path}`."
    )
    md = head + md + tail
    (run_dir / "compare.md").write_text(md + "\n")
    data.update(recipe=recipe.raw, command=command, cells={k: results[k] for k in sorted(results)})
    (run_dir / "compare.json").write_text(json.dumps(data, indent=2, default=str))
    return md


# ------------------------------------------------------------------ finetune studies
def finetune_rows(recipe: Recipe, results: dict) -> list[dict]:
    """One row per model (and per model without pretraining): the numbers of the table."""
    spec = recipe.finetune
    rows = []
    ref_row = None
    for m in recipe.models:
        for scratch in (False, True) if spec.scratch else (False,):
            name = f"{m.label}-{SCRATCH}" if scratch else m.label
            pre = None if scratch else results.get(f"pretrain/{m.label}")
            row = {"model": m.label + (", no pretraining" if scratch else ""), "label": name, "scratch": scratch}
            if pre:
                row.update(
                    params=pre["params"],
                    pretrain_tokens=pre["tokens"],
                    pretrain_loss_start=pre.get("initial_valid_loss"),
                    pretrain_loss=pre["valid_loss"],
                    pretrain_accuracy=pre.get("valid_accuracy"),
                )
            tasks = {}
            for task in spec.tasks:
                lr, by_lr = _chosen_lr(spec, results, name, task)
                done = [
                    r for s in spec.seeds_for(task) if (r := results.get(f"finetune/{name}/{task}/{lr_tag(lr)}seed{s}"))
                ]
                scores = [r["score"] for r in done]
                mean, sd = _mean_sd(scores)
                tasks[task] = {"mean": mean, "sd": sd, "n": len(scores), "scores": scores}
                own = [r["test"] for r in done if "answer_loss" in r.get("test", {})]
                if own:  # generative models: the gold answers' loss behind their own input and another row's
                    for key in ("answer_loss", "answer_loss_other_input"):
                        tasks[task][key], tasks[task][f"{key}_sd"] = _mean_sd([t[key] for t in own])
                if spec.lrs:
                    tasks[task].update(lr=lr, by_lr=by_lr)
                if spec.breakdown:
                    parts = [r.get("breakdown", {}) for r in done]
                    keys = sorted({g for p in parts for g in p})
                    tasks[task]["breakdown"] = {g: statistics.fmean(p[g] for p in parts if g in p) for g in keys}
            row["tasks"] = tasks
            means = [t["mean"] for t in tasks.values()]
            row["average"] = statistics.fmean(means) if means and None not in means else None
            speed = None if scratch else results.get(f"speed/{m.label}")
            if speed and "encoder_infer_ms_per_example" in speed:
                row.update(
                    encoder_infer_ms=speed["encoder_infer_ms_per_example"],
                    encoder_train_ms=speed["encoder_train_ms_per_example"],
                )
            elif speed:
                row.update(
                    train_tokens_per_s=speed["train_tokens_per_s"], infer_tokens_per_s=speed["infer_tokens_per_s"]
                )
            rows.append(row)
            if name == recipe.reference:
                ref_row = row
    for row in rows:
        _relative(row, ref_row, recipe.reference)
    return rows


def _chosen_lr(spec, results: dict, name: str, task: str) -> tuple[float | None, dict]:
    """The fine-tuning rate of `finetune.lrs` with the best mean validation score for this model and
    task (None without a sweep), and each rate's mean validation and test scores."""
    if not spec.lrs:
        return None, {}
    by_lr = {}
    for lr in spec.lrs:
        keys = [f"finetune/{name}/{task}/{lr_tag(lr)}seed{s}" for s in spec.seeds_for(task)]
        done = [results[k] for k in keys if k in results]
        valid = [r["valid"].get(r["metric"]) for r in done if r["valid"].get(r["metric"]) is not None]
        by_lr[lr] = {
            "valid": statistics.fmean(valid) if valid else None,
            "test": statistics.fmean(r["score"] for r in done) if done else None,
        }
    scored = [lr for lr in spec.lrs if by_lr[lr]["valid"] is not None]
    return (max(scored, key=lambda lr: by_lr[lr]["valid"]) if scored else spec.lrs[0]), by_lr


def _relative(row: dict, ref: dict | None, ref_name: str) -> None:
    if ref is None:
        return
    if row.get("average") is not None and ref.get("average"):
        row["percent_of_reference"] = 100 * row["average"] / ref["average"]
    for key in ("train", "infer"):
        mine, theirs = row.get(f"{key}_tokens_per_s"), ref.get(f"{key}_tokens_per_s")
        if mine and theirs:
            row[f"{key}_speedup"] = mine / theirs
        mine, theirs = row.get(f"encoder_{key}_ms") or {}, ref.get(f"encoder_{key}_ms") or {}
        ratios = {n: theirs[n] / ms for n, ms in mine.items() if ms and theirs.get(n)}
        if ratios:
            row[f"encoder_{key}_speedup"] = ratios  # the reference's time / this model's, per length


def scratch_twin(row: dict, rows: list[dict]) -> dict | None:
    """The row of `row`'s model fine-tuned without pretraining (`finetune.scratch`), if there is one."""
    return next((r for r in rows if r["label"] == f"{row['label']}-{SCRATCH}"), None)


def verdict(row: dict, rows: list[dict], ref_name: str) -> str:
    """One line a person reads: speed and quality against the reference, and what pretraining bought."""
    if row["scratch"]:
        return "the same model without pretraining"
    parts = []
    if row["label"] != ref_name and row.get("train_speedup"):
        parts.append(f"{row['train_speedup']:.2f}x {ref_name}'s training speed")
    if row["label"] != ref_name and row.get("encoder_infer_speedup"):
        n, x = max(row["encoder_infer_speedup"].items(), key=lambda kv: int(kv[0]))
        parts.append(f"{x:.2f}x {ref_name}'s encoder speed at {int(n):,} tokens")
    ref = next((r for r in rows if r["label"] == ref_name), None)
    if row["label"] != ref_name and ref and row.get("average") is not None and ref.get("average") is not None:
        points = f"{100 * (row['average'] - ref['average']):+.1f} points"
        if row.get("percent_of_reference") is not None:
            parts.append(f"{row['percent_of_reference']:.0f}% of its average score ({points})")
        else:
            parts.append(f"{points} on its average score")
    if not row["scratch"] and row.get("average") is not None:
        twin = scratch_twin(row, rows)
        if twin and twin.get("average") is not None:
            gain = 100 * (row["average"] - twin["average"])
            losers = [
                t
                for t, v in row["tasks"].items()
                if v["mean"] is not None
                and twin["tasks"][t]["mean"] is not None
                and v["mean"] <= twin["tasks"][t]["mean"]
            ]
            said = f"pretraining {gain:+.1f} points"
            if losers:
                said += f" (no gain on {', '.join(losers)})"
            parts.append(said)
    return "; ".join(parts) if parts else "reference" if row["label"] == ref_name else "-"


def _finetune_report(recipe: Recipe, run_dir: Path, results: dict) -> tuple[str, dict]:
    spec = recipe.finetune
    rows = finetune_rows(recipe, results)
    unigram = results.get("baseline/unigram")
    obj = OBJECTIVE_NAMES.get(unigram["objective"], "pretraining") if unigram else "pretraining"
    majority = {t: majority_baseline(spec.dataset, t, spec.breakdown) for t in spec.tasks}
    ref = recipe.reference
    columns = ["model", "params", "pretrain tokens", f"{obj} loss", f"{obj} acc"]
    columns += [f"{t} ({_metric_name(spec.dataset, t)})" for t in spec.tasks]
    lengths = _encoder_lengths(recipe, results)
    timed = recipe.speed.kind != "none"
    if lengths:
        speed_cols = [f"encoder ms/example, {n:,} tokens" for n in lengths]
    else:
        speed_cols = ["train speed", "inference speed"] if timed else []
    columns += ["average", f"% of {ref}", *speed_cols, "verdict"]
    table = []
    for row in rows:
        row["verdict"] = verdict(row, rows, ref)
        loss = row.get("pretrain_loss")
        start = row.get("pretrain_loss_start")
        table.append(
            [
                row["model"],
                _num(row.get("params"), "{:,.0f}") if row.get("params") else "-",
                _num(row.get("pretrain_tokens"), "{:,}") if row.get("pretrain_tokens") else "0",
                (f"{start:.2f} → {loss:.2f}" if start and loss else _num(loss, "{:.2f}")),
                _num(row.get("pretrain_accuracy")),
                *[_cell(row["tasks"][t]["mean"], row["tasks"][t]["sd"]) for t in spec.tasks],
                _num(row.get("average")),
                _num(row.get("percent_of_reference"), "{:.1f}%"),
                *(_speed_cells(row, lengths) if timed else []),
                row["verdict"],
            ]
        )
    maj_avg = statistics.fmean(majority[t]["score"] for t in spec.tasks)
    table.append(
        ["majority class", "-", "-", "-", "-", *[f"{majority[t]['score']:.3f}" for t in spec.tasks], f"{maj_avg:.3f}"]
        + ["-"] * (len(speed_cols) + 2)
    )
    if unigram:
        table.append(
            ["unigram", "-", "-", f"{unigram['valid_loss']:.2f}", f"{unigram['valid_accuracy']:.3f}"]
            + ["-"] * (len(spec.tasks) + len(speed_cols) + 3)
        )
    seeds = sorted({len(spec.seeds_for(t)) for t in spec.tasks})
    explained = (
        "Task cells: test score, mean ± sd over "
        f"{'/'.join(map(str, seeds))} fine-tuning seeds (the task's metric in the header); average: the macro "
        f"average of the task means; the {obj} loss is held-out, from the untrained model to the pretrained one. "
    )
    if lengths:
        explained += (
            "Speeds: the encoder alone, inference (no-grad forward) milliseconds per example at each input length, "
            f"and in brackets {ref}'s time over this model's"
        )
        if recipe.speed.train_step:
            explained += (
                "; the training step (forward, backward, AdamW) per example below. Medians measured in this run "
                "with nothing else on the device:"
            )
            speeds = [
                f"- {r['model']}: training step "
                + ", ".join(f"{_num(ms, '{:.1f}')} ms at {int(n):,}" for n, ms in r["encoder_train_ms"].items())
                for r in rows
                if r.get("encoder_train_ms")
            ]
        else:
            explained += (
                ". Medians measured in this run with nothing else on the device; no training step timed (the "
                "recipe's `speed.train_step: false`)."
            )
            speeds = None
    elif not timed:
        explained += "Speeds: not timed (the recipe's `speed: {kind: none}`)."
        speeds = []
    else:
        explained += (
            "Speeds: training (forward, backward, optimizer step on a pretraining batch) and inference (encoder "
            f"forward) tokens/s against {ref}, medians measured in this run with nothing else on the device:"
        )
        speeds = [
            f"- {r['model']}: train {r['train_tokens_per_s']:,.0f} tokens/s, "
            f"inference {r['infer_tokens_per_s']:,.0f} tokens/s"
            for r in rows
            if r.get("train_tokens_per_s")
        ]
    if spec.lrs:
        rates = "; ".join(
            f"{r['model']}: " + ", ".join(f"{t} {v['lr']:g}" for t, v in r["tasks"].items() if v.get("lr") is not None)
            for r in rows
        )
        explained += (
            f" Each task's fine-tuning rate was chosen per model from {', '.join(f'{x:g}' for x in spec.lrs)} by the "
            f"best mean validation score, and the test score shown is that rate's: {rates}."
        )
    parts = [_table(columns, table), "", explained]
    if timed and speeds is not None:
        parts += ["", *(speeds or ["- (not measured yet)"])]
    diffs = [f"- {m.label}: {m.differences()}" for m in recipe.models if m.differences()]
    if diffs:
        parts += ["", "What each model does differently from the shared recipe:", "", *diffs]
    if spec.breakdown:
        parts += ["", breakdown_table(spec, rows, majority)]
        plot_breakdown(spec, rows, majority, run_dir / "breakdown.png")
    if any("answer_loss" in t for r in rows for t in r["tasks"].values()):
        parts += ["", answer_loss_table(spec, rows)]
    cloze = {m.label: results[f"cloze/{m.label}"] for m in recipe.models if f"cloze/{m.label}" in results}
    if recipe.cloze:
        parts += ["", cloze_table(recipe, cloze)]
    parts += _data_notes(recipe, majority)
    md = "\n".join(parts)
    _plot_speed_quality(recipe, rows, run_dir / "compare.png", lengths, baseline=maj_avg)
    return md, {"rows": rows, "majority": majority, "unigram": unigram, "cloze": cloze}


def _data_notes(recipe: Recipe, majority: dict) -> list[str]:
    """What bounds the scores and what the models were pretrained on, where a reader needs it: the
    exact-match ceiling of questions asked with several gold answers, each mixture's make-up."""
    notes = []
    for task, m in majority.items():
        if m.get("ambiguous"):
            notes.append(
                f"- {task}: {m['ambiguous']} test questions are asked with several gold answers, so exact match "
                f"can reach at most {m['ceiling']:.3f}."
            )
    seen = set()
    for entry in recipe.models:
        data = pretrain_config(recipe, entry.label).data
        if (data.dataset, data.tokenizer) in seen:
            continue
        seen.add((data.dataset, data.tokenizer))
        try:
            meta = json.loads((shard_path(data.dataset, data.tokenizer) / "meta.json").read_text())
        except (ValueError, OSError):
            continue
        wanted = recipe.mix and (data.dataset, data.tokenizer) == (recipe.mix.add, recipe.mix.shards)
        if wanted and meta.get("mix") != recipe.mix.settings:  # e.g. --report on another machine
            notes.append(
                f"- pretraining data `{data.dataset}` ({data.tokenizer}): the recipe's mixture, not described here "
                f"(this machine's copy is another mixture: {meta.get('mix')})."
            )
        elif meta.get("mix"):
            mix = meta["mix"]
            share = meta["added_tokens"] * mix["times"] / meta["tokens"]["train"]
            line = (
                f"- pretraining data `{data.dataset}` ({data.tokenizer}): {mix['base']} plus the {mix['added']} "
                f"text x {mix['times']} ({share:.1%} of its {meta['tokens']['train']:,} train tokens)"
            )
            if mix.get("task"):
                line += f", with the {mix['task']} task's training pairs as text in every copy"
            if "unrouted_subject_words" in meta:
                line += (
                    f"; {meta['unrouted_subject_words']:.0%} of the test questions' subject words are outside the "
                    "routing vocabulary (MoWE skips them)"
                )
            notes.append(line + ".")
    return ["", *notes] if notes else []


def _encoder_lengths(recipe: Recipe, results: dict) -> list[int]:
    """The input lengths the encoder was timed at (speed kind `encoder`), else []."""
    if recipe.speed.kind != "encoder":
        return []
    timed = [r for k, r in results.items() if k.startswith("speed/") and "lengths" in r]
    return sorted({int(n) for r in timed for n in r["lengths"]}) or list(recipe.speed.lengths)


def _speed_cells(row: dict, lengths: list[int]) -> list[str]:
    if not lengths:
        return [_num(row.get("train_speedup"), "{:.2f}x"), _num(row.get("infer_speedup"), "{:.2f}x")]
    cells = []
    for n in lengths:
        ms = (row.get("encoder_infer_ms") or {}).get(str(n))
        x = (row.get("encoder_infer_speedup") or {}).get(str(n))
        cells.append("-" if ms is None else f"{ms:.1f}" + (f" ({x:.2f}x)" if x else ""))
    return cells


def _metric_name(dataset: str, task: str) -> str:
    metric = task_info(dataset, task)["metric"]
    return {"em_f1": "exact match", "macro_f1": "macro-F1"}.get(metric, metric)


def _plot_speed_quality(
    recipe: Recipe, rows: list[dict], path: Path, lengths: list[int] | None = None, baseline: float | None = None
) -> None:
    """Quality against training speed (FNet's Figure 2), or with encoder timings against the encoder's
    inference time per example at the longest length (CoLT5's Figure 1); `baseline`: the majority
    class's average, drawn as a dashed line."""
    if lengths:
        n = str(max(lengths))
        xs = {r["label"]: (r.get("encoder_infer_ms") or {}).get(n) for r in rows}
        xlabel = f"encoder inference time per example at {int(n):,} tokens (ms)"
        title = f"{recipe.name}: quality against encoder time"
    else:
        xs = {r["label"]: r.get("train_speedup") for r in rows}
        xlabel = f"training speed relative to {recipe.reference} (tokens/s ratio)"
        title = f"{recipe.name}: quality against training speed"
    points = [r for r in rows if xs[r["label"]] and r.get("average") is not None and not r["scratch"]]
    if not points:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=120)
    for r in points:
        ax.scatter(xs[r["label"]], r["average"], s=40)
        ax.annotate(r["model"], (xs[r["label"]], r["average"]), textcoords="offset points", xytext=(5, 4))
    if baseline is not None:  # the majority class's average: what a model that learned nothing scores
        ax.axhline(baseline, color="grey", linestyle="--", linewidth=1, label="majority class")
        ax.legend(loc="best")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{recipe.finetune.dataset} suite average (test)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
