"""Timing: warm-up calls, then `repeats` timed calls; the median is the number to report.

On CUDA each call is bracketed by CUDA events (device time, no host-clock skew); on CPU by
`time.perf_counter`. Peak device memory over the timed calls is recorded on CUDA.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Timing:
    median_ms: float
    min_ms: float
    max_ms: float
    repeats: int
    peak_mem_gib: float | None = None

    @property
    def spread(self) -> float:
        """(max - min) / median: how noisy the repeats were."""
        return (self.max_ms - self.min_ms) / self.median_ms if self.median_ms else 0.0


def measure(
    fn: Callable[[], object],
    warmup: int = 3,
    repeats: int = 10,
    device: str | torch.device | None = None,
) -> Timing:
    """Time `fn()`; `device` (default: CUDA if available) picks events vs the host clock."""
    if warmup < 0 or repeats < 1:
        raise ValueError(f"warmup={warmup} must be >= 0 and repeats={repeats} >= 1")
    device = (
        torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    cuda = device.type == "cuda"
    for _ in range(warmup):
        fn()
    times: list[float] = []
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        peak = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        peak = None
    return Timing(statistics.median(times), min(times), max(times), repeats, peak)


def bench_device(smoke: bool) -> tuple[str, torch.dtype]:
    """(device, dtype) a GPU benchmark runs in: CUDA in bf16, or the CPU in float32 for --smoke
    (or where no GPU is)."""
    cuda = torch.cuda.is_available() and not smoke
    return ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)


def copy_bandwidth(device: str | torch.device = "cuda") -> float:
    """Bytes per second (read + written) of a 2 GiB device-to-device copy, median of 10 after 3
    warm-ups: the memory-bandwidth ceiling the benchmarks' floors divide by."""
    x = torch.empty(2**29, dtype=torch.float32, device=device)
    y = torch.empty_like(x)
    times = []
    for i in range(13):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        y.copy_(x)
        end.record()
        end.synchronize()
        if i >= 3:
            times.append(start.elapsed_time(end) / 1e3)
    del x, y
    return 2 * 2**31 / statistics.median(times)


def cuda_graph_ms(fn: Callable[[], object], repeats: int, warmup: int = 3, on_graph=None) -> float:
    """Median ms of `repeats` replays of `fn()` captured in one CUDA graph (gpt-fast's way of timing
    a decode step: no launch gaps). The warm-up calls run on a side stream before the capture, so
    autotuners, lazy initialisation and compilation stay out of the graph; `on_graph(graph)` runs
    after the timed replays (e.g. a kernel profile of `graph.replay`: a profile before them slowed
    the first graph a process timed by 10%, RESULTS.md `gqa-decode-compiled-GQA-4-MQA`)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    for _ in range(5):
        graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    if on_graph is not None:
        on_graph(graph)
    del graph
    return statistics.median(times)
