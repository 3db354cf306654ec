"""`frugal train --nproc N ...`: a shortcut that re-runs the same command under torchrun
(`python -m torch.distributed.run --standalone --local-addr=127.0.0.1 --nproc-per-node N -m frugalformers.cli ...`).

`--local-addr=127.0.0.1`: one node, so the workers meet on loopback rather than at whatever the
hostname resolves to (on CI runners and containers that is often nothing, or another machine)."""

from __future__ import annotations

import os
import sys


def torchrun_argv(nproc: int, argv: list[str]) -> list[str]:
    """The torchrun command line for `frugal` arguments `argv` with --nproc removed."""
    if nproc < 1:
        raise ValueError(f"--nproc={nproc} must be >= 1")
    rest, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        rest.append(a)
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--local-addr=127.0.0.1",
        f"--nproc-per-node={nproc}",
        "-m",
        "frugalformers.cli",
        *rest,
    ]


def relaunch(nproc: int, argv: list[str]) -> None:
    """Replace this process by torchrun running `frugal argv` on `nproc` workers."""
    cmd = torchrun_argv(nproc, argv)
    print("launching:", " ".join(cmd), flush=True)
    os.execv(cmd[0], cmd)
