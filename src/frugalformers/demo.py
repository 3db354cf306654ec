"""`frugal demo` (the README's first command): prepare the `demo` data, pretrain tiny BERT and
tiny FNet on the same tokens, fine-tune each on both demo tasks, print one table and plot the
pretraining loss curves. Every number in the table is computed by this run."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from frugalformers.api import build_model, count_parameters
from frugalformers.bench.report import format_table
from frugalformers.data.datasets import prepare
from frugalformers.plot import plot_runs
from frugalformers.train.config import load_run_config
from frugalformers.train.logger import read_metrics
from frugalformers.train.run import finetune, pretrain

MODELS = ("bert-tiny", "fnet-tiny")
TASKS = {"sentiment": 64, "topic": 128}  # task -> input length


def run_demo(
    out: str = "runs/demo", pretrain_steps: int = 300, finetune_steps: int = 150, progress: bool = True
) -> int:
    t0 = time.time()
    prepare("demo")
    out_dir = Path(out)
    rows = []
    for preset in MODELS:
        run = out_dir / f"{preset}-pretrain"
        cfg = load_run_config(
            preset,
            None,
            [
                f"steps={pretrain_steps}",
                f"eval_every={pretrain_steps // 3}",
                f"save_every={pretrain_steps}",
                "data.batch_size=32",
                "data.seq_len=128",
                "optim.lr=2e-3",
                "optim.warmup_steps=30",
                "eval_batches=10",
                f"out={run}",
            ],
        )
        result = pretrain(cfg, progress=progress)
        speeds = [r["tokens_per_s"] for r in read_metrics(run) if "tokens_per_s" in r][1:]
        row = {
            "model": preset,
            "params": count_parameters(build_model(preset)),
            "pretrain tokens": pretrain_steps * 32 * 128,
            "pretrain tokens/s (CPU)": statistics.median(speeds) if speeds else None,
            "MLM accuracy": result.get("valid_mlm_accuracy"),
        }
        for task, seq_len in TASKS.items():
            cfg = load_run_config(
                preset,
                None,
                [
                    f"steps={finetune_steps}",
                    f"eval_every={finetune_steps}",
                    f"save_every={finetune_steps}",
                    "data.batch_size=32",
                    f"data.seq_len={seq_len}",
                    f"data.task={task}",
                    "optim.lr=1e-3",
                    "optim.warmup_steps=15",
                    "eval_batches=4",
                    f"init_from={run}",
                    f"out={out_dir / f'{preset}-{task}'}",
                ],
            )
            rows_result = finetune(cfg, progress=progress)
            row[f"{task} test accuracy"] = rows_result["test"]["accuracy"]
        rows.append(row)
    png = plot_runs(
        [str(out_dir / f"{m}-pretrain") for m in MODELS],
        str(out_dir / "pretrain_curves.png"),
        "tiny BERT vs tiny FNet: MLM pretraining on the demo data",
    )
    print("\n" + format_table(rows))
    print(f"\nloss curves: {png}\nruns: {out_dir}/  ({time.time() - t0:.0f} s in all; CPU, fp32)")
    return 0
