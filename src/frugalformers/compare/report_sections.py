"""The sections of a fine-tuning comparison's report beside its main table: each model's loss on
the gold answers behind its own input and another row's, the score per group of a row field (e.g.
per relation, table and plot), and what pretraining stored (the knowledge cloze)."""

from __future__ import annotations

from pathlib import Path

from frugalformers.compare.markdown import cell as _cell
from frugalformers.compare.markdown import num as _num
from frugalformers.compare.markdown import table as _table
from frugalformers.compare.recipe import Recipe


def answer_loss_table(spec, rows: list[dict]) -> str:
    """Each model's teacher-forced loss on the gold test answers behind their own input and behind
    another row's (train/answer_loss.py): it moves before exact match does, and the difference is
    what the model reads from its input."""
    body = []
    for r in rows:
        cells = [r["model"]]
        for t in spec.tasks:
            v = r["tasks"][t]
            own, other = v.get("answer_loss"), v.get("answer_loss_other_input")
            cells += [_cell(own, v.get("answer_loss_sd")), _cell(other, v.get("answer_loss_other_input_sd"))]
            cells.append(_num(other - own if own is not None and other is not None else None, "{:+.3f}"))
        body.append(cells)
    columns = ["model"] + [f"{t}: {c}" for t in spec.tasks for c in ("own input", "another row's", "difference")]
    return (
        "Answer loss (test; teacher-forced nats per gold answer token, its EOS included; mean ± sd over seeds; lower "
        "is better), each answer behind its own input and behind the next test row's (in a task of two texts only "
        "the second is the next row's: retrieval's document, bible_match's candidates; the question stays). The "
        "difference is what the model reads from what was swapped, ~0 for a model that has learned only which "
        "answers are common or what the question alone says. It moves before exact match does.\n\n"
        + _table(columns, body)
    )


def breakdown_table(spec, rows: list[dict], majority: dict) -> str:
    out = []
    for task in spec.tasks:
        groups = sorted(majority[task].get("breakdown", {}))
        cols = [spec.breakdown, "most common answer"] + [r["model"] for r in rows]
        body = []
        for g in groups:
            cells = [g, f"{majority[task]['breakdown'][g]:.3f}"]
            cells += [_num(r["tasks"][task].get("breakdown", {}).get(g)) for r in rows]
            body.append(cells)
        if "breakdown_all" in majority[task]:  # the whole test set: each group's answer against the models
            prior = f"{majority[task]['breakdown_all']:.3f}"
            body.append(["all", prior] + [_num(r["tasks"][task].get("mean")) for r in rows])
        out.append(f"{task} by {spec.breakdown} (test, mean over seeds):\n\n" + _table(cols, body))
    return "\n\n".join(out)


def plot_breakdown(spec, rows: list[dict], majority: dict, path: Path) -> None:
    """Each model's test score per group (e.g. per relation) of the first task, as grouped bars,
    beside the group's most common answer (hatched): the `breakdown` table as a figure."""
    task = spec.tasks[0]
    groups = sorted(majority[task].get("breakdown", {}))
    if not groups:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [("most common answer", [majority[task]["breakdown"][g] for g in groups])]
    series += [(r["model"], [r["tasks"][task].get("breakdown", {}).get(g) for g in groups]) for r in rows]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.5, 0.9 * len(groups)), 4.5), dpi=120)
    for i, (name, values) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(groups))]
        heights = [v if v is not None else 0.0 for v in values]
        ax.bar(xs, heights, width, label=name, hatch="//" if i == 0 else None, color="lightgrey" if i == 0 else None)
    ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
    ax.set_ylabel(f"{task} test score by {spec.breakdown}")
    ax.set_title(f"{task} by {spec.breakdown}: models against each group's most common answer")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def cloze_table(recipe: Recipe, cloze: dict) -> str:
    """What each pretrained model stored: the zero-shot cloze of the facts' objects (compare/cloze.py)."""
    lines = [
        "What pretraining stored, before any fine-tuning: each fact's pretraining sentence with its object "
        "masked as span corruption masks it, scored zero-shot (exact: the object and its end are the argmax "
        "tokens; NLL: per object token). A model pretrained without the facts shows what the sentence alone "
        "lets one guess.",
        "",
        "| model | test questions' facts: exact | object NLL | training questions' facts: exact | object NLL |",
        "|---|---|---|---|---|",
    ]
    for m in recipe.models:
        r = cloze.get(m.label)
        if r is None:
            lines.append(f"| {m.label} | (not run yet) | | | |")
            continue
        te, tr = r["test"], r["train"]
        lines.append(f"| {m.label} | {te['exact']:.3f} | {te['nll']:.2f} | {tr['exact']:.3f} | {tr['nll']:.2f} |")
    if cloze:
        r = next(iter(cloze.values()))
        lines += [
            "",
            f"({r['test']['groups']:,} test and {r['train']['groups']:,} training sentences, one per fact and "
            "template; a fact with several gold objects is exact when any is.)",
        ]
    return "\n".join(lines)
