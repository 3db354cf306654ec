"""`frugal demo` (the README's first command): prepare the `demo` data, pretrain tiny BERT, FNet and
Sparse Mixer on the same tokens, fine-tune each on both demo tasks (plus BERT without pretraining,
as the reference), print one table and plot the pretraining curves. Every number is computed by
this run."""

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

MODELS = ("bert-tiny", "fnet-tiny", "sparse-mixer-tiny")
TASKS = {"sentiment": 64, "topic": 128}  # task -> input length
BATCH, SEQ = 32, 128


def _finetune_all(preset: str, init_from: Path | None, out_dir: Path, steps: int, progress: bool) -> dict:
    from frugalformers.presets import get_preset

    config = get_preset(preset)
    fixed_length = "linear" in config.mixers()  # Linear mixing needs exactly N tokens
    row = {}
    for task, seq_len in TASKS.items():
        seq_len = config.max_seq_len if fixed_length else seq_len
        name = f"{preset}-{task}" if init_from else f"{preset}-scratch-{task}"
        overrides = [
            f"steps={steps}",
            f"eval_every={steps}",
            f"save_every={steps}",
            f"data.batch_size={BATCH}",
            f"data.seq_len={seq_len}",
            f"data.task={task}",
            "optim.lr=2e-3",
            "optim.warmup_steps=15",
            "eval_batches=4",
            f"out={out_dir / name}",
        ]
        if init_from:
            overrides.append(f"init_from={init_from}")
        row[f"{task} test acc"] = finetune(load_run_config(preset, None, overrides), progress=progress, overwrite=True)[
            "test"
        ]["accuracy"]
    return row


def run_demo(
    out: str = "runs/demo", pretrain_steps: int = 400, finetune_steps: int = 200, progress: bool = True
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
                f"eval_every={max(1, pretrain_steps // 3)}",
                f"save_every={pretrain_steps}",
                f"data.batch_size={BATCH}",
                f"data.seq_len={SEQ}",
                "optim.lr=3e-3",
                "optim.warmup_steps=50",
                "eval_batches=10",
                f"out={run}",
            ],
        )
        result = pretrain(cfg, progress=progress, overwrite=True)
        speeds = [r["tokens_per_s"] for r in read_metrics(run) if "tokens_per_s" in r][1:]
        row = {
            "model": preset,
            "params": count_parameters(build_model(preset)),
            "pretrain tokens": pretrain_steps * BATCH * SEQ,
            "pretrain tokens/s": statistics.median(speeds) if speeds else None,
            "MLM acc": result.get("valid_mlm_accuracy"),
        }
        row.update(_finetune_all(preset, run, out_dir, finetune_steps, progress))
        rows.append(row)
    # the same fine-tuning without pretraining: what pretraining bought at this budget
    reference = {"model": "bert-tiny, no pretraining", "params": rows[0]["params"], "pretrain tokens": 0}
    rows.append({**reference, **_finetune_all("bert-tiny", None, out_dir, finetune_steps, progress)})
    png = plot_runs(
        [str(out_dir / f"{m}-pretrain") for m in MODELS],
        str(out_dir / "pretrain_curves.png"),
        "tiny BERT vs tiny FNet: MLM pretraining on the demo data",
    )
    print("\n" + format_table(rows))
    print(
        f"\nCPU, fp32. Tiny models (2-4 layers of width 64) see {pretrain_steps * BATCH * SEQ:,} tokens here: "
        "enough to compare speed and early MLM progress, not enough for pretraining to pay off in fine-tuning; "
        "compare with the last row."
    )
    print(f"loss curves: {png}\nruns: {out_dir}/  ({time.time() - t0:.0f} s in all)")
    return 0
