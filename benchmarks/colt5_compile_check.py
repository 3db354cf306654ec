"""Is CoLT5 training finite on this device, eager and compiled? Eager against compiled, and compiled
with each suspect lowering kept out of Inductor, one subprocess per case (a device-side assert ends
the process that hit it, not the check).

The cases: the router's sort (`nn.routed.rank_descending`, which Inductor lowers to its own Triton
sort on the GPU) and its reversed cumulative logsumexp (`suffix_logsumexp`, a Triton scan) each
replaced by an opaque custom op (eager ATen inside one graph); the iterative solver (neither);
bf16 autocast off; no heavy-branch bias; and three that take one of CoLT5's other differences from
LongT5 away (the routed attention, the routed FFN, the multi-query cross-attention) to say which
part goes wrong. What it found on an H100 is in benchmarks/QUALITY.md (`colt5`, Run 2).

    PYTHONPATH=src python benchmarks/colt5_compile_check.py --out $OUT/colt5_check.json
    python benchmarks/colt5_compile_check.py --device cpu --layers 1 --lengths 128 --steps 2 --cases eager,compiled

Each case at 512 tokens trains `--steps` steps of the seq2seq model on UL2 batches of `corpus`
(or random tokens if its shards are absent) and reports the non-finite steps, the parameters whose
gradient was non-finite first, and the step-0 loss and gradient norm against eager's; at the long
lengths it times nothing and runs the encoder's training step (as the compare speed cell does); the
speed-cell cases run that cell's own steps on one compiled module and report the weights left
non-finite (in the gradients column), or the device assert with its first line and frames.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from frugalformers.api import build_model
from frugalformers.bench.steps import compiled, step_fns
from frugalformers.nn import routed
from frugalformers.presets import get_preset

CASES = {
    "eager": "no torch.compile",
    "compiled": "torch.compile as the trainer does",
    "compiled-opaque-sort": "the router's sort as an opaque custom op",
    "compiled-opaque-scan": "the router's suffix logsumexp as an opaque custom op",
    "compiled-opaque-both": "both as opaque custom ops",
    "compiled-iterative": "router_solver=iterative (no sort in the solver, no scan)",
    "compiled-fp32": "no bf16 autocast",
    "compiled-no-heavy-bias": "heavy_position_bias=False",
    "compiled-no-persistent": "inductor persistent_reductions off (no Triton sort: ATen's instead)",
    "compiled-routed-ffn-only": "LongT5's local attention in place of the routed attention",
    "compiled-routed-attention-only": "a dense FFN in place of the routed FFN",
    "compiled-cross-mha": "multi-head cross-attention in place of CoLT5's multi-query one",
    # long lengths only: the compare speed cell's own steps (bench.steps.step_fns on one compiled module)
    "speed-cell": "as the speed cell: preset dropout, a no-grad eval forward first, AdamW steps",
    "speed-cell-no-dropout": "as the speed cell with dropout 0",
    "speed-cell-train-only": "as the speed cell without the eval forward before training",
}
SPEED_STEPS = 4  # training steps of a speed-cell case (the cell's warmup 3, then timed repeats)


@torch.library.custom_op("frugal_check::sort_desc", mutates_args=())
def _sort_desc(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    values, order = torch.sort(s, dim=-1, descending=True)
    return values, order


@_sort_desc.register_fake
def _(s):
    return torch.empty_like(s), torch.empty_like(s, dtype=torch.long)


def _sort_desc_backward(ctx, grad_values, grad_order):
    (order,) = ctx.saved_tensors
    return torch.zeros_like(grad_values).scatter(-1, order, grad_values)


_sort_desc.register_autograd(
    _sort_desc_backward, setup_context=lambda ctx, inputs, output: ctx.save_for_backward(output[1])
)


@torch.library.custom_op("frugal_check::suffix_lse", mutates_args=())
def _suffix_lse(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1).logcumsumexp(-1).flip(-1)


@_suffix_lse.register_fake
def _(x):
    return torch.empty_like(x)


@torch.library.custom_op("frugal_check::suffix_lse_backward", mutates_args=())
def _suffix_lse_backward_op(x: torch.Tensor, y: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """d/dx_j of sum_t grad_t * y_t, y_t = logsumexp(x[t:]): sum over t <= j of grad_t exp(x_j - y_t),
    the positive and negative parts of grad each summed in log space (as ATen's formula does)."""
    none = torch.full_like(grad, -math.inf)
    pos = torch.where(grad > 0, grad.abs().log(), none) - y
    neg = torch.where(grad < 0, grad.abs().log(), none) - y
    return (x + pos.logcumsumexp(-1)).exp() - (x + neg.logcumsumexp(-1)).exp()


@_suffix_lse_backward_op.register_fake
def _(x, y, grad):
    return torch.empty_like(x)


_suffix_lse.register_autograd(
    lambda ctx, grad: _suffix_lse_backward_op(*ctx.saved_tensors, grad),
    setup_context=lambda ctx, inputs, output: ctx.save_for_backward(inputs[0], output),
)


def _patch(case: str) -> dict:
    """Model overrides for a case; swaps the router's functions in place where it asks."""
    if case in ("compiled-opaque-sort", "compiled-opaque-both"):
        routed.rank_descending = lambda s: tuple(_sort_desc(s))
    if case in ("compiled-opaque-scan", "compiled-opaque-both"):
        routed.suffix_logsumexp = _suffix_lse
    if case == "compiled-no-persistent":
        import torch._inductor.config as inductor_config

        inductor_config.triton.persistent_reductions = False
    if case == "compiled-iterative":
        return {"options": {"router_solver": "iterative"}}
    if case == "compiled-no-heavy-bias":
        return {"options": {"heavy_position_bias": False}}
    if case == "compiled-routed-ffn-only":
        return {"config": {"mixer": "local_attention"}}
    if case == "compiled-routed-attention-only":
        return {"config": {"ffn": "dense"}}
    if case == "compiled-cross-mha":
        return {"config": {"cross_n_kv_heads": None}}
    return {}


def _model(preset: str, layers: int, overrides: dict, dropout: bool = False, **kw):
    config = get_preset(preset)
    options = {**config.options, **overrides.get("options", {})}
    fields = {"n_layers": layers, "n_decoder_layers": layers}
    if not dropout:  # eager and compiled draw different masks, and the step-0 numbers are compared
        fields.update(dropout=0.0, attention_dropout=0.0)
    return build_model(preset, options=options, **fields, **overrides.get("config", {}), **kw)


def _batches(args, vocab: int, device):
    """UL2 batches of `corpus` as the recipe pretrains on, or random tokens if it is not here."""
    try:
        from frugalformers.compare.cells import pretrain_config
        from frugalformers.compare.recipe import load_recipe
        from frugalformers.train.batches import pretrain_batches

        cfg = pretrain_config(load_recipe(args.recipe), args.preset)
        cfg.data.batch_size = args.batch
        it = pretrain_batches(cfg, get_preset(args.preset))
        batches = [it.next_batch() for _ in range(args.steps)]
        source = f"UL2 batches of {cfg.data.dataset}/{cfg.data.tokenizer}"
    except (OSError, ValueError) as e:
        g = torch.Generator().manual_seed(0)
        n = 512
        batches = [
            {
                "input_ids": torch.randint(5, vocab, (args.batch, n), generator=g),
                "labels": torch.randint(5, vocab, (args.batch, n // 2), generator=g),
            }
            for _ in range(args.steps)
        ]
        source = f"random tokens ({type(e).__name__}: {e})"
    return [{k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()} for b in batches], source


def _grad_report(model) -> tuple[float, list[str]]:
    norms = {n: p.grad.float().norm().item() for n, p in model.named_parameters() if p.grad is not None}
    bad = [n for n, v in norms.items() if not math.isfinite(v)]
    total = math.sqrt(sum(v * v for v in norms.values())) if not bad else float("nan")
    return total, bad


def one_case(args) -> dict:
    """Runs in its own process: one case at one length."""
    device = torch.device(args.device)
    overrides = _patch(args.case)
    amp = (
        (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
        if device.type == "cuda" and args.case != "compiled-fp32"
        else (lambda: torch.autocast(device.type, enabled=False))
    )
    torch.manual_seed(0)
    vocab = get_preset(args.preset).vocab_size
    result = {"case": args.case, "length": args.length}
    t0 = time.perf_counter()
    if args.length <= 1024:  # the pretraining: seq2seq on the recipe's batches
        model = _model(args.preset, args.layers, overrides).to(device).train()
        run = torch.compile(model) if args.case != "eager" else model
        batches, result["data"] = _batches(args, vocab, device)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
        bad_steps, first_bad = 0, []
        for i, batch in enumerate(batches):
            with amp():
                loss = run(**batch).loss.float()
            loss.backward()
            norm, bad = _grad_report(model)
            if i == 0:
                result["loss0"], result["grad_norm0"] = loss.item(), norm
            if not (math.isfinite(loss.item()) and math.isfinite(norm)):
                bad_steps += 1
                first_bad = first_bad or (bad or ["(the loss)"])
                opt.zero_grad(set_to_none=True)
                continue
            opt.step()
            opt.zero_grad(set_to_none=True)
        result.update(bad_steps=bad_steps, steps=len(batches), first_bad=first_bad[:6])
    elif args.case.startswith("speed-cell"):  # exactly the compare speed cell's steps, one module
        dropout = args.case != "speed-cell-no-dropout"
        model = _model(args.preset, args.layers, overrides, dropout, head="encoder", max_seq_len=args.length)
        ids = torch.randint(5, vocab, (1, args.length), device=device)
        infer, train = step_fns(compiled(model.to(device), True), ids, amp)
        if args.case != "speed-cell-train-only":
            infer()
        for _ in range(SPEED_STEPS):
            train()
        if device.type == "cuda":
            torch.cuda.synchronize()
        bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
        result.update(loss0=float("nan"), grad_norm0=float("nan"), bad_steps=int(bool(bad)), steps=SPEED_STEPS)
        result["first_bad"] = bad[:6]
    else:  # the compare speed cell's encoder training step at a long length
        model = _model(args.preset, args.layers, overrides, head="encoder", max_seq_len=args.length).to(device)
        run = torch.compile(model, dynamic=False) if args.case != "eager" else model
        ids = torch.randint(5, vocab, (1, args.length), device=device)
        for _ in range(2):
            with amp():
                out = run(input_ids=ids)
                loss = out.hidden.float().square().mean()
            loss.backward()
            norm, bad = _grad_report(model)
            model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        result.update(loss0=loss.item(), grad_norm0=norm, bad_steps=int(bool(bad)), steps=2, first_bad=bad[:6])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="colt5-small")
    ap.add_argument("--recipe", default="recipes/colt5-small.yaml")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--layers", type=int, default=2, help="encoder and decoder layers (the preset has 8)")
    ap.add_argument("--lengths", type=int, nargs="+", default=[512, 16384])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument(
        "--long-cases",
        default="compiled,compiled-opaque-both,compiled-iterative,compiled-fp32,compiled-no-heavy-bias",
        help="cases at the lengths over 1,024 (Inductor sorts over 512 with ATen anyway)",
    )
    ap.add_argument("--parallel", type=int, default=4, help="cases at once (each compiles on the CPU)")
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--out", default=None, help="JSON with every case's result")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--length", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        print("RESULT " + json.dumps(one_case(args)), flush=True)
        return
    unknown = [c for c in (args.cases + "," + args.long_cases).split(",") if c and c not in CASES]
    if unknown:
        sys.exit(f"colt5_compile_check: unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    jobs = [(c, n) for n in args.lengths for c in (args.cases if n <= 1024 else args.long_cases).split(",") if c]

    def launch(job):
        case, n = job
        cmd = [sys.executable, __file__, "--case", case, "--length", str(n)]
        for k in ("preset", "recipe", "device", "layers", "batch", "steps", "lr"):
            cmd += [f"--{k}", str(getattr(args, k))]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=os.environ)
        except subprocess.TimeoutExpired:
            return {"case": case, "length": n, "error": f"timed out after {args.timeout} s"}
        for line in p.stdout.splitlines():
            if line.startswith("RESULT "):
                return json.loads(line[7:])
        lines = p.stderr.splitlines()
        tail = [x for x in lines if x.strip() and "Assertion" not in x][-3:]
        asserts = [x for x in lines if "Assertion" in x]
        frames = [x.strip() for x in lines if x.strip().startswith('File "')][-4:]  # where the error surfaced
        return {
            "case": case,
            "length": n,
            "error": " | ".join(tail)[-400:],
            "device_asserts": len(asserts),
            "first_assert": asserts[0][-300:] if asserts else None,
            "frames": frames,
        }

    with ThreadPoolExecutor(args.parallel) as pool:
        results = list(pool.map(launch, jobs))
    eager = {r["length"]: r for r in results if r["case"] == "eager" and "loss0" in r}
    print(
        "| case | tokens | non-finite steps | first non-finite gradients | loss, step 0 (eager) "
        "| grad norm, step 0 (eager) | s |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            asserts = r.get("device_asserts", 0)
            print(f"| {r['case']} | {r['length']} | ERROR {r['error']} ({asserts} device asserts) | | | | |")
            continue
        e = eager.get(r["length"], {})
        print(
            f"| {r['case']} | {r['length']} | {r['bad_steps']}/{r['steps']} | {', '.join(r['first_bad']) or '-'} | "
            f"{r['loss0']:.4f} ({e.get('loss0', float('nan')):.4f}) | {r['grad_norm0']:.3g} "
            f"({e.get('grad_norm0', float('nan')):.3g}) | {r['seconds']} |"
        )
    if results and "data" in results[0]:
        layers = f"{args.layers} encoder + {args.layers} decoder layers"
        print(
            f"\n512-token cases trained on {results[0]['data']}; {layers}. The routed-*-only and cross-mha "
            "cases are other models: only whether they stay finite counts, not their step-0 numbers."
        )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        Path(args.out).write_text(json.dumps({"device": device, "results": results}, indent=1))


if __name__ == "__main__":
    main()
