"""Where a step's time goes: kernel time per step by category (GEMM, attention, FFT, sort/top-k,
gather/scatter, ...) and the top kernels, from `torch.profiler`.

On CUDA the rows are the GPU kernels and their device time (what a "where the time goes" line in
RESULTS.md needs: the sum is the busy time of the GPU, and the gap to the step's wall time is
launch overhead or host work). On CPU the rows are the `aten::` operators' self time, enough to
test the bookkeeping; CPU numbers say nothing about the GPU.

    prof = profile_step(step, device="cuda", steps=3)
    print(prof.markdown("FNet-Base train, seq 512"))
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.profiler import ProfilerActivity, profile

from frugalformers.bench.report import format_table, hardware

# (category, pattern over the kernel or operator name); the first match wins, so the specific
# kernels (attention's own GEMMs, Inductor's fused kernels) come before the generic patterns.
CATEGORIES: list[tuple[str, re.Pattern]] = [
    (name, re.compile(pattern, re.I))
    for name, pattern in [
        ("attention", r"flash|fmha|attention|sdpa|flex"),
        ("FFT", r"fft"),
        (
            "GEMM",
            r"^triton_tem|gemm|matmul|cutlass|nvjet|xmma|cublas|splitk|_grouped_mm|aten::(mm|bmm|addmm|baddbmm|linear)\b",
        ),
        ("sort / top-k", r"sort|topk|radix|bitonic"),
        ("gather / scatter", r"gather|scatter|index|embedding"),
        ("fused (Inductor)", r"^triton_"),
        ("reduction / norm", r"reduce|norm|softmax|logsumexp|aten::(sum|mean|max|min|amax)\b"),
        ("copy / cast", r"copy|cast|aten::(cat|contiguous|to|_to_copy|clone)\b|memcpy|memset|fill"),
        ("elementwise", r"elementwise|vectorized|unrolled|aten::"),
    ]
]


def category(name: str) -> str:
    for cat, pattern in CATEGORIES:
        if pattern.search(name):
            return cat
    return "other"


@dataclass
class KernelProfile:
    """Per-step kernel time: `by_category` {category: ms}, `kernels` [(name, calls, ms)] sorted
    by time, `wall_ms` the profiled step's wall time (host clock), `device` cuda | cpu."""

    device: str
    steps: int
    wall_ms: float
    by_category: dict[str, float] = field(default_factory=dict)
    kernels: list[tuple[str, float, float]] = field(default_factory=list)

    @property
    def busy_ms(self) -> float:
        return sum(self.by_category.values())

    def category_rows(self) -> list[dict]:
        busy = self.busy_ms or 1.0
        rows = [
            {"category": c, "ms/step": ms, "% of kernel time": 100 * ms / busy}
            for c, ms in sorted(self.by_category.items(), key=lambda kv: -kv[1])
        ]
        return rows + [{"category": "all kernels", "ms/step": self.busy_ms, "% of kernel time": 100.0}]

    def kernel_rows(self, top: int = 8) -> list[dict]:
        busy = self.busy_ms or 1.0
        return [
            {
                "kernel": name if len(name) <= 70 else name[:67] + "...",
                "category": category(name),
                "calls/step": calls,
                "ms/step": ms,
                "%": 100 * ms / busy,
            }
            for name, calls, ms in self.kernels[:top]
        ]

    def markdown(self, title: str, top: int = 8) -> str:
        what = "GPU kernels, device time" if self.device == "cuda" else "CPU operators, self time"
        return (
            f"**{title}** ({what}, mean of {self.steps} profiled steps; step wall time {self.wall_ms:.2f} ms, "
            f"kernels busy {self.busy_ms:.2f} ms)\n\n{format_table(self.category_rows())}\n\n"
            f"{format_table(self.kernel_rows(top))}\n"
        )


def _rows(averages, cuda: bool) -> list:
    """The kernel rows (CUDA: device-side events, not the host operators that launched them, whose
    device time would count every kernel twice) or, on CPU, the aten operators."""
    if not cuda:
        return [r for r in averages if r.key.startswith("aten::")]
    rows = [r for r in averages if r.device_type == torch.autograd.DeviceType.CUDA and r.self_device_time_total > 0]
    if rows:
        return rows
    host = ("aten::", "cuda", "autograd::", "Optimizer", "ProfilerStep", "Memcpy", "Memset")
    return [r for r in averages if r.self_device_time_total > 0 and not r.key.startswith(host)]


def profile_step(
    fn: Callable[[], object], device: str | torch.device, steps: int = 3, warmup: int = 1
) -> KernelProfile:
    """Run `fn` `warmup` times, then profile `steps` calls; per-step kernel time by category."""
    if steps < 1:
        raise ValueError(f"steps={steps} must be >= 1")
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(dev)
    activities = [ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        if cuda:
            torch.cuda.synchronize(dev)
        wall = (time.perf_counter() - t0) * 1e3 / steps
    kernels: dict[str, list[float]] = {}
    for row in _rows(prof.key_averages(), cuda):
        ms = (row.self_device_time_total if cuda else row.self_cpu_time_total) / 1e3
        calls_ms = kernels.setdefault(row.key, [0.0, 0.0])
        calls_ms[0] += row.count / steps
        calls_ms[1] += ms / steps
    out = KernelProfile("cuda" if cuda else "cpu", steps, wall)
    for name, (calls, ms) in sorted(kernels.items(), key=lambda kv: -kv[1][1]):
        out.kernels.append((name, calls, ms))
        cat = category(name)
        out.by_category[cat] = out.by_category.get(cat, 0.0) + ms
    return out


def profiles_markdown(heading: str, command: str, profiles: list[tuple[str, KernelProfile]], note: str = "") -> str:
    """A RESULTS.md section: heading, hardware, the command, then each profile's tables."""

    body = "\n".join(prof.markdown(title) for title, prof in profiles)
    note = f"{note}\n\n" if note else ""
    return f"## {heading}\n\nHardware: {hardware()}  \nCommand: `{command}`\n\n{note}{body}"
