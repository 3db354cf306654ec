"""The open issues' speed targets against the latest measurements: reads the JSON rows the GPU
benchmarks wrote into benchmarks/results/ and prints (and writes to RESULTS.md, section `targets`) one
line per target: what it asks, what was measured, met or not, and which file it came from.

    python benchmarks/targets.py              # after a GPU run, from its JSON files
    python benchmarks/targets.py --dir DIR    # JSON files elsewhere (e.g. the device's $OUT)

A target whose file is missing is listed as "not measured"; nothing is inferred or carried over.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load(directory: Path, name: str):
    path = directory / name
    if not path.exists():
        return None
    return json.loads(path.read_text())["rows"]


def first_file(directory: Path, names: list[str]) -> tuple[str | None, object]:
    """The first of `names` that exists in `directory`, with its rows."""
    for name in names:
        rows = load(directory, name)
        if rows is not None:
            return name, rows
    return None, None


def best_of_files(
    directory: Path, names: list[str], key: str, **fields
) -> tuple[float | None, dict | None, str | None]:
    """The largest `key` among the rows with these fields over every file of `names` that exists
    (e.g. compiled and compiled with CUDA graphs: both "compiled the same way" for ours and the
    baseline), with its row and file; (None, None, first existing file) when no row has it."""
    found, first = [], None
    for name in names:
        rows = load(directory, name)
        if rows is None:
            continue
        first = first or name
        value, row = best(rows, key, **fields)
        if value is not None:
            found.append((value, row, name))
    return max(found, key=lambda f: f[0]) if found else (None, None, first)


def where(rows: list[dict], **fields) -> list[dict]:
    """The rows whose fields equal the given values; a value ending in '*' matches as a prefix."""

    def match(r: dict) -> bool:
        for k, v in fields.items():
            got = r.get(k)
            if isinstance(v, str) and v.endswith("*"):
                if not str(got).startswith(v[:-1]):
                    return False
            elif got != v:
                return False
        return True

    return [r for r in rows if match(r)]


def best(rows: list[dict], key: str, **fields) -> tuple[float | None, dict | None]:
    """The largest numeric `key` among the rows with these fields, and its row."""
    found = [r for r in where(rows, **fields) if isinstance(r.get(key), (int, float))]
    if not found:
        return None, None
    row = max(found, key=lambda r: r[key])
    return row[key], row


def line(issue: int, target: str, value: float | None, goal: float, source: str | None, note: str = "",
         higher_is_better: bool = True) -> dict:  # fmt: skip
    if value is None:
        return {"issue": issue, "target": target, "measured": "not measured", "met": "-", "source": source or "-"}
    met = value >= goal if higher_is_better else value <= goal
    shown = f"{value:.2f}" if value >= 0.1 else f"{value:.2g}"  # 0.0044, not 0.00
    shown += "x" if higher_is_better else ""
    return {"issue": issue, "target": target, "measured": shown + (f" ({note})" if note else ""),
            "met": "yes" if met else "no", "source": source}  # fmt: skip


def fnet_targets(d: Path) -> list[dict]:
    out = []
    cells = (("train", 512, 1.5), ("train", 8192, 3.5), ("inference", 512, 1.4), ("inference", 8192, 3.0))
    for mode, seq, goal in cells:
        value, row, source = best_of_files(d, ["fnet-compiled-cudagraphs.json", "fnet-compiled.json"], "vs our BERT",
                                           model="FNet-Base (ours*", mode=mode, seq=seq)  # fmt: skip
        note = row["model"].split(", ", 1)[1].rstrip(")") if row else ""
        out.append(line(6, f"FNet-Base {mode} vs our BERT-Base, seq {seq}, compiled: >= {goal}x", value, goal,
                        source, note))  # fmt: skip
    return out


def colt5_targets(d: Path) -> list[dict]:
    out = []
    for source in ("colt5-compiled-cudagraphs.json", "colt5-compiled.json", "colt5.json"):
        data = load(d, source)
        if data is None:
            continue
        enc, blk = data.get("encoder", []), data.get("block", [])

        colt5_16k = {"model": "CoLT5-Base (ours)", "seq": 16384, "mode": "inference"}
        value, _ = best(enc, "LongT5 (ours) ms / this", **colt5_16k)
        out.append(line(7, f"CoLT5-Base inference 16k vs our LongT5-TGlobal: >= 2.0x [{source}]", value, 2.0, source))
        value, _ = best(enc, "HF LongT5 ms / this", **colt5_16k)
        if value is None:  # an eager file from before the column existed: from the two rows
            hf = [
                r
                for r in where(enc, model="HF LongT5*", seq=16384, mode="inference*")
                if isinstance(r.get("ms"), float)
            ]
            ours = [r for r in where(enc, **colt5_16k) if isinstance(r.get("ms"), float)]
            value = hf[0]["ms"] / ours[0]["ms"] if hf and ours else None
        out.append(line(7, f"CoLT5-Base inference 16k vs HF LongT5EncoderModel: >= 3.0x [{source}]", value, 3.0,
                        source))  # fmt: skip
        value, _ = best(blk, "vs fastest working peer", block="ours")
        out.append(line(7, f"one CoLT5 layer vs colt5-attention's fastest mode: >= 1.5x [{source}]", value, 1.5,
                        source))  # fmt: skip
    if not out:
        out = [line(7, "CoLT5 targets", None, 0, None)]
    return out


def moe_targets(d: Path) -> list[dict]:
    out = []
    source, rows = first_file(d, ["moe_compiled.json", "moe.json"])
    rows = rows or []
    for E in (16, 64):
        value, row = best(rows, "vs dense", experts=E, layer="ours*")
        note = row["layer"].replace("ours ", "") if row else ""
        out.append(line(9, f"MoE layer, {E} experts, vs dense FFN of equal active FLOPs: >= 0.8x", value, 0.8,
                        source, note))  # fmt: skip
    files = ["sparse_mixer_compiled_cudagraphs.json", "sparse_mixer_compiled.json"]
    if not any((d / f).exists() for f in files):
        files = ["sparse_mixer.json"]  # eager, when nothing compiled was measured
    cells = (
        ("Sparse Mixer Base", "train", 1.65),
        ("Sparse Mixer Base", "inference", 1.61),
        ("Fast Sparse Mixer Base", "train", 1.89),
        ("Fast Sparse Mixer Base", "inference", 1.98),
    )
    for label, mode, goal in cells:
        value, _, source = best_of_files(d, files, "vs our BERT", model=label, mode=mode)
        out.append(line(9, f"{label} {mode} vs our BERT-Base, seq 512: >= {goal}x", value, goal, source))
    return out


def mowe_targets(d: Path) -> list[dict]:
    data = load(d, "mowe.json")
    rows = data.get("layer", []) if data else []
    value, _ = best(rows, "vs dense equal FLOPs", experts=32768)
    return [line(8, "MoWE layer, 32K experts, vs dense FFN of equal active FLOPs: >= 0.5x", value, 0.5,
                 "mowe.json" if data else None)]  # fmt: skip


def gqa_targets(d: Path) -> list[dict]:
    """From the compiled decode file, which holds each variant and shape's latest row (a run over
    some variants replaces its own rows; every row names its run)."""
    path = d / "gqa_decode_compiled.json"
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    latest = {(r.get("model"), r.get("batch"), r.get("ctx")): r for r in rows}
    with_hf = {k: r for k, r in latest.items() if isinstance(r.get("HF generate ms/step"), float)}
    source = path.name if rows else None
    shape = [r for r in where(list(latest.values()), batch=32, ctx=1024) if isinstance(r.get("ms/step"), float)]
    out = []

    def fastest(r: dict) -> tuple[float, str]:
        """The variant's best step time: the default or an opt-in decode kernel."""
        options = [(r["ms/step"], "default")] + [
            (r[k], k.removesuffix(" ms/step"))
            for k in r
            if k.endswith(" ms/step") and k != "ms/step" and isinstance(r[k], float)  # fmt: skip
        ]
        return min(options)

    for r in shape:
        ms, how = fastest(r)
        ratio = ms / r["floor ms"] if isinstance(r.get("floor ms"), float) else None
        out.append(line(10, f"{r['model']} decode step, batch 32, ctx 1k: <= 1.5x its floor", ratio, 1.5, source,
                        how, higher_is_better=False))  # fmt: skip
    by_model = {r["model"]: fastest(r) for r in shape}
    if "MHA" in by_model and "GQA-4" in by_model:
        ratio = by_model["MHA"][0] / by_model["GQA-4"][0]
        note = f"MHA {by_model['MHA'][1]}, GQA-4 {by_model['GQA-4'][1]}"
        runs = {r.get("run") for r in shape if r["model"] in ("MHA", "GQA-4")}
        note += "" if len(runs) == 1 else "; timed in different runs"
        out.append(line(10, "GQA-4 step vs MHA step, batch 32, ctx 1k: >= 2.0x", ratio, 2.0, source, note))
    else:
        out.append(line(10, "GQA-4 step vs MHA step, batch 32, ctx 1k: >= 2.0x", None, 2.0, source))
    for r in where(list(with_hf.values()), batch=32, ctx=1024):
        if isinstance(r.get("ms/step"), float):
            ms, how = fastest(r)
            out.append(line(10, f"{r['model']} vs HF generate, batch 32, ctx 1k: >= 5x", r["HF generate ms/step"] / ms,
                            5.0, source, how))  # fmt: skip
    return out or [line(10, "GQA decode targets", None, 0, None)]


def all_targets(d: Path) -> list[dict]:
    return fnet_targets(d) + colt5_targets(d) + mowe_targets(d) + moe_targets(d) + gqa_targets(d)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", default=str(HERE / "results"), help="folder with the benchmarks' JSON files")
    p.add_argument("--results", default=str(HERE / "RESULTS.md"))
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    from frugalformers.bench import format_table, update_results

    rows = all_targets(Path(args.dir))
    table = format_table(rows, ["issue", "target", "measured", "met", "source"])
    print(table)
    if not args.no_write:
        md = (
            "## The open issues' speed targets, from the latest JSON files\n\n"
            "Command: `python benchmarks/targets.py` (reads the rows the GPU benchmarks wrote; `source` names the "
            "file; in parentheses: which implementation or decode kernel gave the number).\n\n" + table + "\n"
        )
        update_results(args.results, "targets", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
