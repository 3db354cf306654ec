"""benchmarks/colt5_compile_check.py: its opaque stand-ins for the router's sort and suffix
logsumexp give ATen's values and gradients (else a case that uses them would test something else),
and one case runs end to end in a subprocess as the script runs each (eager, CPU, random tokens)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("colt5_compile_check", ROOT / "benchmarks" / "colt5_compile_check.py")
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)


def test_the_opaque_sort_and_scan_match_aten_in_value_and_gradient():
    torch.manual_seed(0)
    x = (torch.randn(3, 64, dtype=torch.float64) * 5).requires_grad_()
    g = torch.randn(3, 64, dtype=torch.float64)
    ref = x.flip(-1).logcumsumexp(-1).flip(-1)
    out = check._suffix_lse(x)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(ref, x, g)[0])
    values, order = check._sort_desc(x)
    ref_values, ref_order = x.sort(-1, descending=True)
    assert torch.equal(order, ref_order)
    torch.testing.assert_close(torch.autograd.grad(values, x, g)[0], torch.autograd.grad(ref_values, x, g)[0])


def test_a_case_runs_in_its_own_process_and_reports_finite_steps(tmp_path):
    out = tmp_path / "check.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "colt5_compile_check.py"), "--device", "cpu"]
    cmd += ["--preset", "colt5-tiny", "--recipe", str(tmp_path / "absent.yaml"), "--layers", "1", "--batch", "2"]
    cmd += ["--steps", "2", "--lengths", "512", "--cases", "eager", "--parallel", "1", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    (result,) = json.loads(out.read_text())["results"]
    assert result["case"] == "eager" and result["bad_steps"] == 0 and result["steps"] == 2, result
    assert result["data"].startswith("random tokens") and result["loss0"] > 0
    assert "| eager | 512 | 0/2 | - |" in p.stdout


def test_a_speed_cell_case_trains_the_encoder_as_the_compare_cell_does(tmp_path):
    out = tmp_path / "check.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "colt5_compile_check.py"), "--device", "cpu"]
    cmd += ["--preset", "colt5-tiny", "--layers", "1", "--lengths", "2048", "--cases", "eager"]
    cmd += ["--long-cases", "speed-cell-train-only", "--parallel", "1", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    (result,) = json.loads(out.read_text())["results"]
    assert result["case"] == "speed-cell-train-only" and result["length"] == 2048, result
    assert result["bad_steps"] == 0 and result["steps"] == check.SPEED_STEPS
