import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from frugalformers.bench import (
    count_flops,
    flops_per_token,
    format_table,
    measure,
    merge_json,
    mfu,
    update_results,
    write_json,
)

ROOT = Path(__file__).resolve().parents[2]


def test_measure_reports_median():
    calls = []
    t = measure(lambda: calls.append(1), warmup=2, repeats=5, device="cpu")
    assert len(calls) == 7 and t.repeats == 5 and t.min_ms <= t.median_ms <= t.max_ms


def test_flops_per_token_matches_hand_count():
    # bert-tiny with the MLM head at T=128: 2*params of every matmul + 2*2*T*d per layer for attention
    d, L, ff, V, T = 64, 2, 256, 8192, 128
    per_layer = 2 * (4 * d * d + 2 * d * ff) + 2 * 2 * T * d
    head = 2 * (d * d + d * V)
    assert flops_per_token("bert-tiny", T) == L * per_layer + head


def test_count_flops_with_backward_is_about_three_times_forward():
    import torch

    model = torch.nn.Linear(64, 64, bias=False)
    x = torch.randn(8, 64, requires_grad=True)

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = model

        def forward(self, x):
            from frugalformers.models.outputs import ModelOutput

            return ModelOutput(hidden=self.lin(x))

    f = count_flops(Wrap(), {"x": x})
    fb = count_flops(Wrap(), {"x": x}, backward=True)
    assert f == 2 * 8 * 64 * 64 and fb == 3 * f


def test_mfu():
    assert mfu(1e12, 1.0, 2e12) == 0.5 and mfu(1e12, 1.0, None) is None


def test_table_json_and_results_sections(tmp_path):
    rows = [{"a": 1, "b": 2.5}, {"a": 3, "b": None}]
    table = format_table(rows)
    header = table.splitlines()[0]
    assert "a" in header and "b" in header and "2.50" in table and "| -" in table
    later = format_table([{"a": 1}, {"a": 2, "flag": True}])  # a key only a later row has gets its column
    assert "flag" in later.splitlines()[0] and later.splitlines()[2].split("|")[2].strip() == "-"
    write_json(tmp_path / "r.json", rows, hw="x")
    assert json.loads((tmp_path / "r.json").read_text())["rows"][0]["a"] == 1
    res = tmp_path / "RESULTS.md"
    update_results(res, "one", "first")
    update_results(res, "two", "second")
    update_results(res, "one", "replaced")
    text = res.read_text()
    assert "replaced" in text and "first" not in text and text.count("<!-- section:two -->") == 1


def test_plot(tmp_path):
    from frugalformers.bench import plot_lines

    plot_lines(tmp_path / "p.png", {"a": ([512, 1024], [1.0, 2.0])}, "seq", "tok/s", "t")
    assert (tmp_path / "p.png").stat().st_size > 1000


def run_smoke(script: str, *extra: str) -> str:
    """Run a benchmark script with --smoke (CPU, tiny) and return its stdout."""
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke", *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_encoders_benchmark_smoke():
    out = run_smoke("encoders.py")
    assert "HF BertModel" in out and "ours / HF" in out


def test_fnet_benchmark_smoke(tmp_path):
    out = run_smoke("fnet.py", "--out", str(tmp_path))
    assert "FNet-Base (ours, fft)" in out and "HF FNetModel" in out and "dft-gemm (bf16)" in out


def test_fnet_benchmark_default_models_follow_the_mode():
    """Without --models a compiled run times ours only (a command-line run once timed every model,
    Hugging Face's included, and ran out of its GPU time): the default comes from the mode, not from
    looking for "--models" in an argument list."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import fnet
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert fnet.default_models(compile=True, profile=False) == [
        "ours-bert", "ours-fnet-fft", "ours-fnet-rfft", "ours-fnet-dft"
    ]  # fmt: skip
    assert fnet.default_models(compile=True, profile=True) == ["ours-bert", "ours-fnet-fft"]
    assert set(fnet.default_models(compile=False, profile=False)) == set(fnet.ALL_MODELS)


def test_gqa_decode_benchmark_smoke(tmp_path):
    out = run_smoke("gqa_decode.py", "--out", str(tmp_path))
    assert "GQA-4" in out and "HF generate ms/step" in out


def test_gqa_decode_hf_flag():
    """`--hf` absent: the default pair; bare: every variant that runs (a bare flag once meant none);
    `none`: none; a name that is not a variant: an error naming it and the choices."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gqa_decode
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    known = [v for v, _ in gqa_decode.VARIANTS]
    assert gqa_decode.hf_choice(None, known, known) == ["MHA", "GQA-4"]
    assert gqa_decode.hf_choice([], known, ["GQA-4", "MQA"]) == ["GQA-4", "MQA"]
    assert gqa_decode.hf_choice(["none"], known, known) == []
    assert gqa_decode.hf_choice(["MQA"], known, known) == ["MQA"]
    with pytest.raises(SystemExit, match="GQA-3.*choose from MHA"):
        gqa_decode.hf_choice(["GQA-3"], known, known)


def test_decode_attention_benchmark_smoke(tmp_path):
    out = run_smoke("decode_attention.py", "--out", str(tmp_path))
    assert "matmul (default)" in out and (tmp_path / "decode_attention.json").exists()


def test_sparse_mixer_benchmark_smoke(tmp_path):
    out = run_smoke("sparse_mixer.py", "--out", str(tmp_path))
    assert "Fast Sparse Mixer Base" in out and "HF BertModel" in out


def test_moe_benchmark_smoke(tmp_path):
    out = run_smoke("moe.py", "--out", str(tmp_path))
    assert "ours experts_choose top-1" in out and "HF SwitchTransformersSparseMLP" in out and "vs dense" in out


def test_profile_modes_smoke():
    """--profile writes kernel time by category; on CPU the GEMMs are aten::mm / bmm / addmm. The six
    scripts run two at a time (each subprocess spends most of its time importing)."""
    expected = {
        "moe.py": ["ours experts_choose top-1, 4 experts", "| GEMM", "all kernels"],
        "sparse_mixer.py": ["Sparse Mixer Base, train", "| GEMM"],
        "fnet.py": ["FNet-Base (ours, fft), train, seq 32", "| FFT"],
        "colt5.py": ["one layer: ours, bf16 autocast", "HF LongT5EncoderModel (tglobal), encoder inference"],
        "mowe.py": ["MoWE, 256 experts, fused kernels, bf16 bank, row-sparse grad", "| gather / scatter"],
        "gqa_decode.py": ["GQA-4, batch 2, ctx 32", "| GEMM"],
    }
    with ThreadPoolExecutor(2) as pool:
        outs = dict(zip(expected, pool.map(lambda script: run_smoke(script, "--profile"), expected)))
    for script, needles in expected.items():
        missing = [n for n in needles if n not in outs[script]]
        assert not missing, f"{script} --profile lacks {missing}"


def test_colt5_benchmark_smoke(tmp_path):
    out = run_smoke("colt5.py", "--out", str(tmp_path))
    assert "CoLT5-Base (ours)" in out and "HF LongT5EncoderModel (tglobal)" in out and "decode ms" in out


def test_distributed_benchmark_command_is_a_real_frugal_train(tmp_path, demo_data):
    """The rows of benchmarks/distributed.py are `frugal train` under torchrun: one CPU row runs here."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from distributed import run_case
    finally:
        sys.path.pop(0)
    r = run_case("bert-tiny", 2, ["device=cpu", "data.dataset=demo", "data.tokenizer=tiny", "data.seq_len=32"],
                 "demo", 4, 2, tmp_path / "run", timeout=240)  # fmt: skip
    assert "error" not in r, r.get("error")
    assert r["tokens/s"] > 0 and r["loss"] > 0


def test_mowe_benchmark_smoke(tmp_path):
    out = run_smoke("mowe.py", "--out", str(tmp_path))
    assert "fused kernels, bf16 bank, row-sparse grad" in out and "Switch-Base" in out and "vs dense equal FLOPs" in out
    assert "num_stages" in run_smoke("mowe.py", "--sweep")


def test_targets_table_reads_the_benchmarks_rows(tmp_path):
    """benchmarks/targets.py: each issue's target from the JSON rows; missing files are 'not measured'."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import targets
    finally:
        sys.path.pop(0)
    write_json(tmp_path / "fnet-compiled.json", [
        {"model": "FNet-Base (ours, fft)", "mode": "train", "seq": 512, "vs our BERT": 1.38},
        {"model": "FNet-Base (ours, dft-gemm)", "mode": "train", "seq": 512, "vs our BERT": 1.61},
        {"model": "BERT-Base (ours, sdpa)", "mode": "train", "seq": 512, "vs our BERT": 1.0},
    ])  # fmt: skip
    write_json(tmp_path / "gqa_decode_compiled.json", [
        {"model": "MHA", "batch": 32, "ctx": 1024, "ms/step": 2.0, "floor ms": 1.5, "split-K ms/step": 1.8,
         "HF generate ms/step": 12.0},
        {"model": "GQA-4", "batch": 32, "ctx": 1024, "ms/step": 1.0, "floor ms": 0.7, "split-K ms/step": 0.85},
    ])  # fmt: skip
    rows = {(r["issue"], r["target"]): r for r in targets.all_targets(tmp_path)}
    fnet = rows[(6, "FNet-Base train vs our BERT-Base, seq 512, compiled: >= 1.5x")]
    assert fnet["measured"] == "1.61x (dft-gemm)" and fnet["met"] == "yes"
    assert rows[(6, "FNet-Base inference vs our BERT-Base, seq 512, compiled: >= 1.4x")]["measured"] == "not measured"
    gqa = rows[(10, "GQA-4 step vs MHA step, batch 32, ctx 1k: >= 2.0x")]
    assert gqa["measured"] == "2.12x (MHA split-K, GQA-4 split-K)" and gqa["met"] == "yes"  # 1.8 / 0.85
    floor = rows[(10, "MHA decode step, batch 32, ctx 1k: <= 1.5x its floor")]
    assert floor["measured"] == "1.20 (split-K)" and floor["met"] == "yes"
    assert rows[(10, "MHA vs HF generate, batch 32, ctx 1k: >= 5x")]["measured"] == "6.67x (split-K)"
    assert rows[(8, "MoWE layer, 32K experts, vs dense FFN of equal active FLOPs: >= 0.5x")]["met"] == "-"
    # compiled with CUDA graphs is compiled the same way for both models: the better file counts, named
    write_json(tmp_path / "fnet-compiled-cudagraphs.json", [
        {"model": "FNet-Base (ours, fft)", "mode": "train", "seq": 512, "vs our BERT": 1.55},
        {"model": "FNet-Base (ours, fft)", "mode": "inference", "seq": 512, "vs our BERT": 1.45},
    ])  # fmt: skip
    rows = {(r["issue"], r["target"]): r for r in targets.all_targets(tmp_path)}
    fnet = rows[(6, "FNet-Base train vs our BERT-Base, seq 512, compiled: >= 1.5x")]
    assert fnet["measured"] == "1.61x (dft-gemm)" and fnet["source"] == "fnet-compiled.json"
    fnet = rows[(6, "FNet-Base inference vs our BERT-Base, seq 512, compiled: >= 1.4x")]
    assert fnet["measured"] == "1.45x (fft)" and fnet["source"] == "fnet-compiled-cudagraphs.json"
    # a later --variants run re-times GQA-4 into the same file: its row replaces the older one, and
    # the ratio against MHA says that the two were timed in different runs
    later = [{"model": "GQA-4", "batch": 32, "ctx": 1024, "ms/step": 0.7, "floor ms": 0.7}]
    merge_json(tmp_path / "gqa_decode_compiled.json", later, ("model", "batch", "ctx"))
    rows = {(r["issue"], r["target"]): r for r in targets.all_targets(tmp_path)}
    assert rows[(10, "GQA-4 decode step, batch 32, ctx 1k: <= 1.5x its floor")]["measured"] == "1.00 (default)"
    ratio = rows[(10, "GQA-4 step vs MHA step, batch 32, ctx 1k: >= 2.0x")]["measured"]
    assert ratio.endswith("; timed in different runs)") and ratio.startswith("2.57x")  # 1.8 / 0.7


def test_layer_fwd_bwd_drops_gradients_like_training():
    """The layer benchmarks' step starts from no gradient each call (zero_grad(set_to_none=True)),
    so timing two calls never includes accumulating into .grad; a tuple output (MoE) is handled."""
    import contextlib

    import torch

    from frugalformers.bench.steps import layer_fwd_bwd
    from frugalformers.nn.moe import MoEFeedForward

    torch.manual_seed(0)
    layer = MoEFeedForward(8, 16, n_experts=2, min_capacity=1, expert_dropout=0.0)
    x = torch.randn(2, 4, 8, requires_grad=True)
    step = layer_fwd_bwd(layer, contextlib.nullcontext, x)
    step()
    once = [p.grad.clone() for p in layer.parameters()]
    step()
    for g, p in zip(once, layer.parameters()):
        torch.testing.assert_close(p.grad, g)  # accumulated, it would be 2 g


def test_gqa_decode_reports_a_failing_decode_kernel_in_its_cell(tmp_path, capsys, monkeypatch):
    """An opt-in decode kernel that raises (e.g. a Triton kernel that does not compile on the GPU)
    fills its own cells with the error; the default step and the other rows are still timed."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import gqa_decode
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    real = gqa_decode.decode_step_time

    def failing(model, *args, **options):
        if options.get("grouped_decode") == "triton":
            model.setup_cache(1, 8)  # left set up, as a failure half-way would
            raise RuntimeError("PassManager::run failed")
        return real(model, *args, **options)

    monkeypatch.setattr(gqa_decode, "decode_step_time", failing)
    argv = ["--smoke", "--variants", "GQA-4", "--batch", "2", "--ctx", "32", "--alts", "triton-attn", "matmul-attn"]
    assert gqa_decode.main([*argv, "--out", str(tmp_path), "--hf", "none"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| GQA-4"))
    assert "error RuntimeError: PassManager::run failed" in row
    assert row.count("error") == 1  # matmul-attn was timed


def test_a_partial_run_replaces_its_own_rows_in_the_settings_file_and_keeps_the_rest(tmp_path):
    """One JSON per benchmark and setting: a run over some variants replaces the rows it measured,
    keeps the others, and every row names the run and hardware it came from."""
    path = tmp_path / "gqa_decode_compiled.json"
    key = ("model", "batch")
    merge_json(path, [{"model": "MHA", "batch": 32, "ms": 1.0}, {"model": "MQA", "batch": 32, "ms": 0.5}], key,
               hardware="H200")  # fmt: skip
    merged = merge_json(path, [{"model": "MHA", "batch": 32, "ms": 0.9}, {"model": "MHA", "batch": 1, "ms": 0.2}], key,
                        hardware="H100")  # fmt: skip
    data = json.loads(path.read_text())
    assert data["rows"] == merged and data["meta"]["hardware"] == "H100"
    by = {(r["model"], r["batch"]): r for r in data["rows"]}
    assert set(by) == {("MHA", 32), ("MHA", 1), ("MQA", 32)}
    assert by[("MHA", 32)]["ms"] == 0.9 and by[("MHA", 32)]["hardware"] == "H100"
    assert by[("MQA", 32)]["hardware"] == "H200" and by[("MQA", 32)]["run"] <= by[("MHA", 1)]["run"]
