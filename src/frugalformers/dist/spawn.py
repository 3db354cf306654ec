"""Run a function on W local processes joined in a gloo (CPU) group, as torchrun would set them
up: for tests and for trying multi-process code on a laptop. `fn(*args)` runs on every rank with
RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE / MASTER_ADDR / MASTER_PORT set and the group initialised; the
list of per-rank return values comes back (they must be picklable)."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import torch
import torch.multiprocessing as mp

from frugalformers.dist import env as dist_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn, world: int, port: int, args: tuple, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)

    dist_env.init("cpu")
    try:
        result = fn(*args)
    except BaseException:
        dist_env.shutdown(clean=False)
        raise
    dist_env.shutdown()
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")


def run_on_ranks(fn, world_size: int, *args) -> list:
    """`[fn(*args) on rank r for r in range(world_size)]`, each in its own process (gloo)."""
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_entry, args=(fn, world_size, free_port(), args, tmp), nprocs=world_size, join=True)
        return [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=False) for r in range(world_size)]
