"""Speed and memory harness: timing with warm-up and medians, kernel-time profiles by category,
counted FLOPs and MFU, tables, JSON dumps, RESULTS.md sections and plots. Used by the scripts in
`benchmarks/`."""

from frugalformers.bench.flops import count_flops, flops_per_token, mfu, peak_flops
from frugalformers.bench.profile import KernelProfile, profile_step, profiles_markdown
from frugalformers.bench.report import format_table, hardware, merge_json, plot_lines, update_results, write_json
from frugalformers.bench.timing import Timing, copy_bandwidth, measure

__all__ = [
    "KernelProfile",
    "profile_step",
    "profiles_markdown",
    "Timing",
    "measure",
    "copy_bandwidth",
    "count_flops",
    "flops_per_token",
    "mfu",
    "peak_flops",
    "format_table",
    "hardware",
    "plot_lines",
    "update_results",
    "merge_json",
    "write_json",
]
