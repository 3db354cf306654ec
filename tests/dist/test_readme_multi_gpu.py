"""The README's "More than one GPU" commands run as written (2 CPU processes, gloo)."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands() -> list[str]:
    text = README.read_text()
    block = re.search(r"<!-- test: these commands run in tests/dist/test_readme_multi_gpu.py.*?```bash\n(.*?)```", text, re.S)
    assert block, "README lost its multi-GPU command block"
    return [line.split("   #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_multi_gpu_commands_run(tmp_path, demo_data):
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    commands = readme_commands()
    assert len(commands) == 3
    for cmd in commands:
        args = shlex.split(cmd) + ["--no-progress", "eval_batches=1", "data.batch_size=8", "log_every=1"]
        proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    from frugalformers.train.logger import read_metrics

    steps = sorted(r["step"] for r in read_metrics(tmp_path / "runs/ddp") if "loss" in r)
    assert steps == list(range(1, 10))  # 6 steps on 2 ranks, then 7..9 resumed on one process
    assert sorted(p.name for p in (tmp_path / "runs/ddp/checkpoints").iterdir())[-1] == "step-00000009"
    assert (tmp_path / "runs/ep/checkpoints/step-00000004").exists()
