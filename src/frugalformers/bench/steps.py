"""Step closures shared by the benchmark scripts: one inference forward, one training step, and
the static-shape compile every `--compile` row uses."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch


def bf16_autocast(device: str | torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """bf16 autocast (with TF32 matmuls for what stays fp32) on CUDA; plain fp32 elsewhere."""
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def compiled(fn, enabled: bool | str = True, mode: str | None = None):
    """`torch.compile(fn)` with static shapes and a fresh Dynamo state (one graph per model and
    length: no recompile limit, no stale guards, no automatic-dynamic graph), or `fn` itself.
    `enabled` may name the compile mode itself (e.g. "reduce-overhead": CUDA graphs)."""
    if not enabled:
        return fn
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False, mode=enabled if isinstance(enabled, str) else mode)


def last_hidden(out) -> torch.Tensor:
    """Our `ModelOutput.hidden` or a Hugging Face output's `last_hidden_state`."""
    return out.hidden if hasattr(out, "hidden") else out.last_hidden_state


def step_fns(model: torch.nn.Module, ids: torch.Tensor, autocast) -> tuple[Callable, Callable]:
    """(infer, train): a no-grad forward, and forward + mean-square loss + backward + fused AdamW."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=ids.is_cuda)

    def infer():
        model.eval()
        with torch.no_grad(), autocast():
            return last_hidden(model(input_ids=ids))

    def train():
        model.train()
        with autocast():
            loss = last_hidden(model(input_ids=ids)).float().square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return infer, train


def layer_fwd_bwd(layer: torch.nn.Module, autocast, inp: torch.Tensor, *args) -> Callable[[], None]:
    """One forward + backward of a single layer on `inp` (extra forward arguments in `args`; of a
    tuple output, e.g. an MoE's (y, aux), the first element is differentiated). Gradients are
    dropped before each step, as `zero_grad(set_to_none=True)` does in training: accumulating into
    `.grad` would add a read-modify-write of every parameter's gradient per call, which for a layer
    with many experts is more traffic than its GEMMs."""

    def step():
        for t in (*layer.parameters(), inp):
            t.grad = None
        with autocast():
            y = layer(inp, *args)
            y = y[0] if isinstance(y, tuple) else y
        y.float().square().mean().backward()

    return step


@dataclass(frozen=True)
class CompileSetting:
    """How a benchmark compiles its models, from `--compile` / `--cuda-graphs`:
    `how` is what `compiled` takes (False, True or the mode "reduce-overhead"), `suffix` names the
    RESULTS.md section and files ("", "-compiled", "-compiled-cudagraphs"), `flags` is the command
    line's part and `title` the section title's ("", ", compiled", ", compiled with CUDA graphs")."""

    how: bool | str
    suffix: str
    flags: str
    title: str


def add_compile_flags(p: argparse.ArgumentParser, compile_help: str) -> None:
    p.add_argument("--compile", action="store_true", help=compile_help)
    p.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="with --compile: torch.compile mode reduce-overhead (CUDA graphs: no launch gaps between kernels), "
        "for the baseline and ours alike",
    )


def compile_setting(p: argparse.ArgumentParser, args: argparse.Namespace) -> CompileSetting:
    if args.cuda_graphs and not args.compile:
        p.error("--cuda-graphs is a compile mode: add --compile")
    if args.cuda_graphs:
        return CompileSetting("reduce-overhead", "-compiled-cudagraphs", " --compile --cuda-graphs",
                              ", compiled with CUDA graphs")  # fmt: skip
    if args.compile:
        return CompileSetting(True, "-compiled", " --compile", ", compiled")
    return CompileSetting(False, "", "", "")
