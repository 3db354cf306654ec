"""Tables, JSON dumps, RESULTS.md sections and plots for benchmark scripts."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import tempfile
from pathlib import Path

import torch
from tabulate import tabulate


def hardware() -> str:
    """One line naming the device, the software and the host."""
    parts = []
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        parts.append(f"{torch.cuda.device_count()}x {props.name} ({props.total_memory / 2**30:.0f} GiB)")
        parts.append(f"CUDA {torch.version.cuda}")
    else:
        parts.append(f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()}")
    parts.append(f"torch {torch.__version__}")
    try:
        import transformers

        parts.append(f"transformers {transformers.__version__}")
    except ImportError:
        pass
    parts.append(f"Python {platform.python_version()}")
    return ", ".join(parts)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
    return str(v)


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A GitHub-markdown table of `rows` (dicts), columns in the given order (default: every key of
    any row, in the order they first appear: a key only later rows have still gets its column)."""
    if not rows:
        return "(no rows)"
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    return tabulate([[_fmt(r.get(c)) for c in columns] for r in rows], headers=columns, tablefmt="github")


def write_json(path: str | Path, rows: list[dict], **meta) -> None:
    """{"meta": meta + the UTC time written, "rows": rows} (newer files win where rows overlap)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {**meta, "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str))


def merge_json(path: str | Path, rows: list[dict], key: tuple[str, ...], **meta) -> list[dict]:
    """Write `rows` into the benchmark's one JSON file for its setting, keeping the rows of earlier
    runs that this run did not measure (same `key` fields: this run's row replaces the older one).
    Each row records the run it came from (`run`: UTC time, `hardware`), so rows of different runs in
    one file are never mistaken for one measurement. Returns the merged rows, this run's first."""
    path = Path(path)
    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    new = [{**r, "run": when, "hardware": meta.get("hardware")} for r in rows]
    mine = {tuple(r.get(k) for k in key) for r in new}
    old = json.loads(path.read_text())["rows"] if path.exists() else []
    kept = [r for r in old if tuple(r.get(k) for k in key) not in mine]
    merged = new + kept
    write_json(path, merged, **meta)
    return merged


def update_results(path: str | Path, section: str, markdown: str) -> None:
    """Replace (or append) the block between `<!-- section:NAME -->` markers in RESULTS.md."""
    path = Path(path)
    text = (
        path.read_text()
        if path.exists()
        else "# Benchmark results\n\nEach section is written by the script it names.\n"
    )
    start, end = f"<!-- section:{section} -->", f"<!-- /section:{section} -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def plot_lines(
    path: str | Path,
    series: dict[str, tuple[list, list]],
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = True,
    logy: bool = False,
) -> None:
    """Line plot of named (x, y) series into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=120)
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=name)
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def add_output_args(p, here: Path, topic: str) -> None:
    """The arguments every benchmark takes: --smoke (CPU, tiny), --results (the markdown file to
    update, default `here/RESULTS-TOPIC.md`), --out (where the JSON and plots go, `output_dir`)."""
    p.add_argument("--smoke", action="store_true", help="a CPU dry run at tiny sizes (writes no results)")
    p.add_argument("--results", default=str(here / f"RESULTS-{topic}.md"))
    p.add_argument("--out", default=None, help="folder for the JSON rows and plots (default: benchmarks/results/)")


def output_dir(out: str | None, smoke: bool, default: Path) -> Path:
    """Where a benchmark writes its JSON rows and plots: `--out` if given, else `default/results`
    (`default`: the benchmarks folder), except that a `--smoke` run (CPU, tiny) writes to a fresh
    temporary folder: its numbers must never replace measured ones."""
    if out:
        return Path(out)
    if smoke:
        return Path(tempfile.mkdtemp(prefix="frugal-smoke-"))
    return Path(default) / "results"
