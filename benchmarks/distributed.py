"""Training throughput on 1 GPU vs 2 GPUs: `frugal train` under torchrun, data parallel (DDP,
FSDP2) and expert parallel, for Sparse Mixer Base and MoWE-Base.

Run on a machine with 2 GPUs (packed corpus with routing ids first):

    frugal data pack corpus --tokenizer base --words --max-mb 24 --out .pack/corpus-base-words
    python benchmarks/distributed.py --data .pack/corpus-base-words

Every row is a real `frugal train --nproc N ...` (the torchrun command it launches:
`frugalformers.dist.launch.torchrun_argv`) (weak scaling: 32 sequences of 512 tokens per
GPU, so the global batch doubles with the GPUs), bf16 autocast, eager. tokens/s is the median of
the values the run logged (global tokens over wall time, every 5 steps) over its last two thirds;
"x 1 GPU" divides by the 1-GPU row of the same model measured in the same invocation.

What to expect (written before running): DDP overlaps the gradient all-reduce with the backward
pass, so for Sparse Mixer Base (~130M dense-equivalent parameters, 0.5 GB of fp32 gradients per
step against a ~100 ms step) 2 GPUs should reach ~1.9x. MoWE-Base has a 3.2B-parameter expert bank:
DDP all-reduces its 12.6 GB fp32 gradient every step and every GPU runs AdamW over all 3.4B
parameters, so DDP cannot scale well there; expert parallelism keeps half the bank per GPU (no
bank all-reduce, half the optimizer work) and should beat DDP.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from frugalformers.bench import format_table, hardware, update_results
from frugalformers.dist.launch import torchrun_argv
from frugalformers.train.logger import read_metrics

HERE = Path(__file__).resolve().parent

CASES = [  # (preset, label, GPUs, extra overrides)
    ("sparse-mixer-base", "1 GPU", 1, []),
    ("sparse-mixer-base", "DDP", 2, ["parallel=ddp"]),
    ("sparse-mixer-base", "FSDP2", 2, ["parallel=fsdp"]),
    ("sparse-mixer-base", "DDP + expert parallel", 2, ["expert_parallel=true"]),
    ("mowe-base", "1 GPU", 1, []),
    ("mowe-base", "DDP", 2, ["parallel=ddp"]),
    ("mowe-base", "DDP + expert parallel", 2, ["expert_parallel=true"]),
]


def run_case(
    preset: str, gpus: int, extra: list[str], data: str, steps: int, per_gpu: int, out: Path, timeout: float = 240
) -> dict:
    cmd = torchrun_argv(gpus, [
        "train", "--preset", preset, "--no-progress",
        f"steps={steps}", f"out={out}", f"data.dataset={data}", "data.tokenizer=base", "data.seq_len=512",
        "data.target_len=128", f"data.batch_size={per_gpu * gpus}", "optim.warmup_steps=10", "log_every=5",
        f"eval_every={steps}", "eval_batches=2", "save_every=0", "save_final=false", *extra,
    ])  # fmt: skip
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "NCCL_NVLS_ENABLE": "0"}
        )
    except subprocess.TimeoutExpired as e:
        return {
            "error": f"timed out after {timeout} s: {str(e.stdout)[-500:]} {str(e.stderr)[-800:]}",
            "wall_s": timeout,
        }
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        lines = (proc.stdout + proc.stderr).splitlines()
        # Python errors of the workers, and C++ aborts ("terminate called after throwing ... what(): ...")
        failed = re.compile(r"Error|Exception|terminate|what\(\)")
        errors = [ln for ln in lines if failed.search(ln) and "ChildFailedError" not in ln]
        return {"error": "\n".join(errors[:8] or lines[-30:]), "wall_s": wall}
    recs = [r for r in read_metrics(out) if "tokens_per_s" in r]
    steady = recs[len(recs) // 3 :]
    return {
        "tokens/s": statistics.median(r["tokens_per_s"] for r in steady),
        "peak GiB/GPU": max(r.get("gpu_mem_gb", 0.0) for r in recs),
        "loss": recs[-1]["loss"],
        "wall_s": wall,
    }


def write_results(rows: list[dict], args) -> None:
    table = format_table(rows)
    md = (
        f"## More than one GPU: `frugal train` under torchrun, 1 vs 2 GPUs\n\nHardware: {hardware()}  \n"
        f"Command: `python benchmarks/distributed.py --data {args.data} --steps {args.steps}`  \n"
        f"Weak scaling: {args.per_gpu} sequences x 512 tokens per GPU, bf16 autocast, eager, MLM (Sparse Mixer) "
        f"or span corruption (MoWE, target 128). tokens/s: global tokens per second, median of the logged values "
        f"over the last two thirds of {args.steps} steps; `x 1 GPU` against the 1-GPU row of the same model in "
        f"the same invocation. MoWE-Base: T5.1.1-Base with 2 encoder word-expert layers sharing 32,768 experts "
        f"(3.2B sparse parameters).\n\n{table}\n"
    )
    update_results(args.results, "distributed", md)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=".pack/corpus-base-words")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--per-gpu", type=int, default=32, help="sequences of 512 tokens per GPU")
    p.add_argument("--presets", nargs="*", default=None)
    p.add_argument("--out", default="runs/bench-distributed")
    p.add_argument("--results", default=str(HERE / "RESULTS-distributed.md"))
    args = p.parse_args(argv)
    rows, base = [], {}
    for preset, label, gpus, extra in CASES:
        if args.presets and preset not in args.presets:
            continue
        out = Path(args.out) / f"{preset}-{gpus}-{label.replace(' ', '').replace('+', '-')}"
        r = run_case(preset, gpus, extra, args.data, args.steps, args.per_gpu, out)
        if "error" in r:
            print(f"{preset} {label}: FAILED\n{r['error']}", flush=True)
            rows.append({"model": preset, "mode": label, "GPUs": gpus, "tokens/s": None, "x 1 GPU": "failed"})
            write_results(rows, args)
            continue
        if gpus == 1:
            base[preset] = r["tokens/s"]
        row = {
            "model": preset,
            "mode": label,
            "GPUs": gpus,
            "global batch": f"{args.per_gpu * gpus} x 512",
            "tokens/s": r["tokens/s"],
            "x 1 GPU": r["tokens/s"] / base[preset] if preset in base else None,
            "peak GiB/GPU": r["peak GiB/GPU"],
            "loss @ last step": r["loss"],
        }
        rows.append(row)
        print(row, f"(wall {r['wall_s']:.0f} s)", flush=True)
        write_results(rows, args)  # after every row: a run cut short still leaves its rows
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
