"""The process group of a `torchrun` launch, read from its environment variables.

`torchrun --nproc-per-node N` sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT in
every worker. `init()` joins the group (NCCL on CUDA, gloo on CPU), pins each worker to GPU
LOCAL_RANK, and returns a `DistEnv`; without those variables it returns the single-process env,
so one code path serves both.
"""

from __future__ import annotations

import gc
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes logs, progress bars and checkpoints."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def _single_host() -> bool:
    """All ranks on this machine: torchrun's LOCAL_WORLD_SIZE equals WORLD_SIZE."""
    return os.environ.get("LOCAL_WORLD_SIZE") == os.environ.get("WORLD_SIZE")


def _bind_gloo_to_loopback() -> None:
    """On one host, gloo talks over the loopback interface.

    By default gloo binds to whatever the machine's hostname resolves to; on hosts whose name
    resolves to nothing, or to an address of another machine (containers, CI runners), the
    workers hang or abort before the first collective. A GLOO_SOCKET_IFNAME set by the user wins.
    """
    if "GLOO_SOCKET_IFNAME" in os.environ or not _single_host():
        return
    loopback = [name for _, name in socket.if_nameindex() if name == "lo" or name.startswith("lo")]
    if loopback:
        os.environ["GLOO_SOCKET_IFNAME"] = loopback[0]


def init(device: str = "auto") -> DistEnv:
    """Join the torchrun process group if there is one. `device`: auto | cpu | cuda."""
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda but no CUDA device is available; use device=cpu or device=auto")
    if not launched_by_torchrun():
        return DistEnv(device=torch.device("cuda" if use_cuda else "cpu"))
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={local} but only {torch.cuda.device_count()} GPUs are visible; "
                f"launch at most {torch.cuda.device_count()} processes per node"
            )
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        if not use_cuda:
            _bind_gloo_to_loopback()
        dist.init_process_group("nccl" if use_cuda else "gloo", device_id=dev if use_cuda else None)
    return DistEnv(rank, world, local, dev)


def current() -> DistEnv:
    """The env of an already initialised group (or the single-process env)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistEnv(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    return DistEnv(dist.get_rank(), dist.get_world_size(), local, dev)


def all_reduce_sum(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum of `t` over ranks (a copy; `t` is unchanged). No-op on one process."""
    if not env.distributed:
        return t
    out = t.detach().clone()
    dist.all_reduce(out)
    return out


def broadcast_object(obj, env: DistEnv):
    """Rank 0's `obj` on every rank (so decisions such as early stopping agree everywhere)."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def shutdown(clean: bool = True) -> None:
    """Leave the process group. After a run that finished (`clean`): collect the garbage first (a
    DDP / FSDP module caught in a reference cycle can keep the group's C++ objects alive until
    interpreter exit, where destroying them aborted the process, "terminate called without an
    active exception", in ~1 of 10 two-rank gloo runs; none in 40 since) and wait for every rank.
    After an error no barrier: the other ranks may never get there, and the launcher stops them."""
    if dist.is_available() and dist.is_initialized():
        if clean:
            gc.collect()
            dist.barrier()
        dist.destroy_process_group()
