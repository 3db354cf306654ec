"""The `frugal` command."""

from __future__ import annotations

import argparse
import sys


def _cmd_models(args: argparse.Namespace) -> int:
    from frugalformers.zoo import zoo_table

    print(zoo_table(args.names or None, args.seq))
    print(
        f"\nparams count shared tensors once; FLOPs are counted (torch flop counter) for one forward at "
        f"seq {args.seq} (or the preset's max), heads included (MLM / LM / seq2seq with decoder length = input)."
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from frugalformers.demo import run_demo

    return run_demo(seq_len=args.seq)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="frugal", description="frugalformers: Transformers that spend compute where it pays"
    )
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("models", help="list every preset with parameters and forward FLOPs per token")
    m.add_argument("names", nargs="*", help="presets to show (default: all)")
    m.add_argument("--seq", type=int, default=512, help="sequence length for the FLOP count (default 512)")
    m.set_defaults(func=_cmd_models)
    d = sub.add_parser("demo", help="the main job: model zoo, then a quick check of every tiny model")
    d.add_argument("--seq", type=int, default=64, help="sequence length of the tiny-model check")
    d.set_defaults(func=_cmd_demo)
    from frugalformers.data.cli import add_parser as add_data_parser

    add_data_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from frugalformers.data.sources import SourceError

    try:
        return args.func(args)
    except (ValueError, SourceError) as e:
        print(f"frugal: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
