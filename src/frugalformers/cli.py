"""The `frugal` command.

Each subcommand imports what it runs inside its handler, so `frugal data list` or `frugal --help`
starts without loading torch, the models and the training stack (the only imports of the package
made inside functions)."""

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

    return run_demo(args.out, args.pretrain_steps, args.finetune_steps, args.seeds, args.workers)


def _run_config(args: argparse.Namespace):
    from frugalformers.train.config import load_run_config, preset_of_run

    preset = args.preset
    if preset is None:  # --resume: the run's own preset; finetune init_from=RUN: the pretrained run's
        given = dict(o.split("=", 1) for o in args.overrides if "=" in o)
        if args.resume and given.get("out"):
            preset = preset_of_run(given["out"])
        elif getattr(args, "func", None) is _cmd_finetune and given.get("init_from"):
            preset = preset_of_run(given["init_from"])
    return load_run_config(preset, args.config, args.overrides)


def _run_distributed(args: argparse.Namespace, job) -> int:
    """Run `job(cfg)` here, or relaunch under torchrun for --nproc N > 1; only rank 0 prints."""
    from frugalformers.dist import env as dist_env

    if args.nproc > 1 and not dist_env.launched_by_torchrun():
        from frugalformers.dist.launch import relaunch

        relaunch(args.nproc, sys.argv[1:])
    cfg = _run_config(args)
    env = dist_env.init(cfg.device)
    try:
        result = job(cfg, env)
    except BaseException:
        dist_env.shutdown(clean=False)
        raise
    dist_env.shutdown()
    if env.is_main:
        print({k: v for k, v in result.items()})
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from frugalformers.train.run import pretrain

    progress = not args.no_progress
    return _run_distributed(
        args, lambda cfg, env: pretrain(cfg, args.resume, progress=progress, overwrite=args.overwrite)
    )


def _cmd_finetune(args: argparse.Namespace) -> int:
    from frugalformers.train.run import finetune

    progress = not args.no_progress
    return _run_distributed(
        args, lambda cfg, env: finetune(cfg, args.resume, progress=progress, overwrite=args.overwrite)
    )


def _cmd_eval(args: argparse.Namespace) -> int:
    import json

    from frugalformers.train.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(
        args.checkpoint,
        args.task,
        args.dataset,
        args.split,
        args.file,
        args.tokenizer,
        args.seq_len,
        args.unknown_labels,
        args.metric,
    )
    print(json.dumps(result, indent=2))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import json

    from frugalformers.train.evaluate import predict_file

    rows = predict_file(args.checkpoint, args.file, args.out, args.dataset, args.tokenizer, args.seq_len)
    if args.out:
        print(f"{len(rows)} predictions written to {args.out}")
    else:
        for r in rows:
            print(json.dumps(r, ensure_ascii=False))
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from frugalformers.train.evaluate import generate_text

    for line in generate_text(
        args.checkpoint,
        args.prompt,
        args.dataset,
        args.tokenizer,
        args.max_new_tokens,
        args.temperature,
        args.top_k,
        args.top_p,
        args.seed,
        args.device,
        args.compile,
        {"grouped_decode": args.grouped_decode},
    ):
        print(line)
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from frugalformers.api import count_parameters
    from frugalformers.convert.folders import folder_format, load_any, save_as
    from frugalformers.convert.gqa import convert_model

    model = load_any(args.source)
    before = count_parameters(model)
    convert_model(model, args.kv_heads, args.method, args.stacks, args.seed)
    fmt = args.format or folder_format(args.source)
    if fmt == "hf" and args.format is None and model.config.family == "decoder" and model.config.norm != "rmsnorm":
        fmt = "ours"  # GPT-2's format has no kv-head setting: the grouped model is written in ours
        print("note: GPT-2's Hugging Face format cannot hold grouped kv heads; writing our format")
    save_as(model, args.out, fmt)
    print(
        f"converted {args.source} to {args.kv_heads} kv heads ({args.method} pooling, {args.stacks}): "
        f"{before:,} -> {count_parameters(model):,} parameters, written to {args.out} ({fmt} format)"
    )
    return 0


def _cmd_uptrain(args: argparse.Namespace) -> int:
    import json

    from frugalformers.train.uptrain import uptrain

    print(
        json.dumps(
            uptrain(args.converted, args.original_run, args.alpha, args.overrides, progress=not args.no_progress),
            indent=2,
        )
    )
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from frugalformers.compare import run_compare

    skip = tuple(k for k in (args.skip or "").split(",") if k)
    run_compare(args.recipe, args.out, args.resume, args.workers, report_only=args.report, skip=skip)
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from frugalformers.plot import plot_runs

    print(plot_runs(args.runs, args.out))
    return 0


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--preset",
        help="model preset (`frugal models`); or `preset:` in the YAML; with --resume (or finetune init_from=RUN) "
        "the run's own when left out",
    )
    p.add_argument("--config", help="YAML file with any of the options below")
    p.add_argument("--resume", action="store_true", help="continue the run in `out` from its newest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in `out` (else refused)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--nproc", type=int, default=1, help="processes (GPUs) on this machine: relaunches under torchrun (default 1)"
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. steps=500 optim.lr=3e-4 model.n_layers=4")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="frugal", description="frugalformers: Transformers that spend compute where it pays"
    )
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("models", help="list every preset with parameters and forward FLOPs per token")
    m.add_argument("names", nargs="*", help="presets to show (default: all)")
    m.add_argument("--seq", type=int, default=512, help="sequence length for the FLOP count (default 512)")
    m.set_defaults(func=_cmd_models)
    d = sub.add_parser(
        "demo", help="the main job: tiny BERT, FNet and Sparse Mixer pretrained, fine-tuned with and without it, timed"
    )
    d.add_argument("--out", default="runs/demo", help="the comparison's folder (a second run reads it back)")
    d.add_argument("--pretrain-steps", type=int, default=400)
    d.add_argument("--finetune-steps", type=int, default=80)
    d.add_argument("--seeds", type=int, default=2, help="fine-tuning seeds per task")
    d.add_argument("--workers", type=int, default=2, help="cells trained at once (2 cores: 2)")
    d.set_defaults(func=_cmd_demo)
    from frugalformers.data.cli import add_parser as add_data_parser
    from frugalformers.train.config import help_text

    add_data_parser(sub)
    epilog = "options (key=value, or in the YAML file; defaults shown):\n" + help_text()
    fmt = argparse.RawDescriptionHelpFormatter
    t = sub.add_parser(
        "train",
        help="pretrain (MLM / span corruption or UL2 / causal LM by family)",
        epilog=epilog,
        formatter_class=fmt,
    )
    _add_run_args(t)
    t.set_defaults(func=_cmd_train)
    f = sub.add_parser(
        "finetune",
        help="fine-tune on a task (data.task) or a CSV / JSONL file (data.file)",
        epilog=epilog,
        formatter_class=fmt,
    )
    _add_run_args(f)
    f.set_defaults(func=_cmd_finetune)
    e = sub.add_parser("eval", help="score a checkpoint on every row of a file, or on a task split")
    e.add_argument("checkpoint", help="checkpoint folder or run folder")
    e.add_argument("--task", help="a task of --dataset")
    e.add_argument("--file", help="or your CSV / JSONL file with labels (every row is scored)")
    e.add_argument("--split", choices=["train", "validation", "test"], help="with --task (default test)")
    e.add_argument("--dataset", help="default: the run's")
    e.add_argument("--tokenizer", help="default: the run's")
    e.add_argument("--seq-len", type=int, help="input length (default: the run's)")
    e.add_argument(
        "--unknown-labels",
        default="error",
        choices=["error", "wrong"],
        help="a label the model was not fine-tuned on: an error naming it (default), or a wrong answer",
    )
    e.add_argument(
        "--metric",
        choices=["accuracy", "macro_f1", "em_f1"],
        help="with --file: accuracy, macro_f1, or em_f1 for free-text answers (default: the run's data.metric)",
    )
    e.set_defaults(func=_cmd_eval)
    pr = sub.add_parser("predict", help="label every row of a CSV / JSONL file (with each label's probability)")
    pr.add_argument("checkpoint", help="checkpoint folder or run folder of a fine-tuned model")
    pr.add_argument("--file", required=True, help="CSV / JSONL with a `text` column (and `text_b`)")
    pr.add_argument("--out", help="write the predictions to this .csv / .jsonl (never over an existing file)")
    pr.add_argument("--dataset", help="default: the run's")
    pr.add_argument("--tokenizer", help="default: the run's")
    pr.add_argument("--seq-len", type=int, help="input length (default: the run's)")
    pr.set_defaults(func=_cmd_predict)
    g = sub.add_parser("generate", help="generate text from a causal LM or encoder-decoder checkpoint")
    g.add_argument("checkpoint")
    g.add_argument("prompt", nargs="+")
    g.add_argument("--dataset", default="demo", help="dataset whose tokenizer the model was trained with")
    g.add_argument("--tokenizer", default="tiny")
    g.add_argument("--max-new-tokens", type=int, default=32)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto (cuda if available) | cpu | cuda")
    g.add_argument(
        "--compile", action="store_true", help="compile the decode step (CUDA graphs on GPU; pays for long outputs)"
    )
    g.add_argument(
        "--grouped-decode",
        default="auto",
        choices=["auto", "matmul", "triton"],
        help="attention over the kv cache while decoding: auto = the flash-decoding Triton kernel on CUDA where a "
        "layer's cache is 16 MB or more (it reads each kv head once for its query group), the matmul path elsewhere",
    )
    g.set_defaults(func=_cmd_generate)
    cv = sub.add_parser("convert", help="convert checkpoints: `convert gqa` pools multi-head K/V into groups")
    cvs = cv.add_subparsers(dest="convert_command", required=True)
    gq = cvs.add_parser("gqa", help="MHA -> GQA / MQA by pooling contiguous kv-head groups (Ainslie et al. 2023)")
    gq.add_argument("source", help="model folder: ours, or Hugging Face (Llama, T5, BERT, FNet)")
    gq.add_argument("--kv-heads", type=int, required=True, help="key/value heads after conversion (1 = MQA)")
    gq.add_argument("--method", default="mean", choices=["mean", "first", "random"])
    gq.add_argument(
        "--stacks",
        default="decoder",
        choices=["decoder", "encoder", "all"],
        help="T5 family: which stacks to convert (the paper: decoder)",
    )
    gq.add_argument("--format", choices=["ours", "hf"], help="output format (default: the input's)")
    gq.add_argument("--seed", type=int, default=0, help="for --method random")
    gq.add_argument("--out", required=True)
    gq.set_defaults(func=_cmd_convert)
    up = sub.add_parser("uptrain", help="continue pretraining a converted model for alpha of the original steps")
    up.add_argument("converted", help="converted model folder (ours)")
    up.add_argument("--original-run", help="the original model's run folder (its config.yaml is the recipe)")
    up.add_argument("--alpha", type=float, default=0.05, help="fraction of the original steps (paper: 0.05)")
    up.add_argument("--no-progress", action="store_true")
    up.add_argument("overrides", nargs="*", help="key=value run overrides, e.g. out=runs/up")
    up.set_defaults(func=_cmd_uptrain)
    cp = sub.add_parser(
        "compare",
        help="pretrain, fine-tune and time several models on the same data and schedule; one table",
        description="Run a comparison recipe (recipes/*.yaml): every cell's result is cached in the run folder, "
        "so --resume continues a run that was cut off without redoing finished cells.",
    )
    cp.add_argument("recipe", help="a recipe YAML file, e.g. recipes/fnet-small.yaml")
    cp.add_argument("--out", help="run folder (default runs/compare/NAME)")
    cp.add_argument("--resume", action="store_true", help="continue the comparison in --out")
    cp.add_argument(
        "--workers", type=int, default=1, help="cells trained at once in worker processes (timings still run alone)"
    )
    cp.add_argument("--report", action="store_true", help="only (re)write the report of the cells done so far")
    cp.add_argument(
        "--skip",
        metavar="KINDS",
        help="cell kinds to leave for a later --resume, comma-separated (e.g. speed,decode: time the models "
        "once no other job shares the machine)",
    )
    cp.set_defaults(func=_cmd_compare)
    pl = sub.add_parser("plot", help="loss and metric curves of runs into a PNG")
    pl.add_argument("runs", nargs="+")
    pl.add_argument("--out", default="curves.png")
    pl.set_defaults(func=_cmd_plot)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may follow options (`frugal uptrain DIR --alpha 0.1 out=runs/x`)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = list(args.overrides) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    import os

    from frugalformers.checkpoint import CheckpointError
    from frugalformers.compare import CompareError
    from frugalformers.data.sources import SourceError
    from frugalformers.train.trainer import TrainingInterrupted, TrainingStopped

    try:
        return args.func(args)
    except TrainingInterrupted as e:
        again = " ".join(["frugal", *(sys.argv[1:] if argv is None else argv)])
        again += "" if "--resume" in again else " --resume"
        print(f"frugal: interrupted at step {e.step}; {e.saved}; resume with: {again}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("frugal: interrupted", file=sys.stderr)
        return 130
    except (ValueError, SourceError, CheckpointError, TrainingStopped, CompareError) as e:
        if os.environ.get("FRUGAL_DEBUG"):
            raise
        print(
            f"frugal: error: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}", file=sys.stderr
        )
        return 2
    except Exception as e:  # anything else: one line, the traceback on request
        if os.environ.get("FRUGAL_DEBUG"):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"frugal: error: {type(e).__name__}: {first} (FRUGAL_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
