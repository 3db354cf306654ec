#!/usr/bin/env bash
# GPU measurements written but not yet run, in parts that each fit one 10-minute device call, in
# the order they matter (a 30-minute budget holds the first three). One H200; run from the
# repository root with the project (and the carried wheels) on PYTHONPATH:
#
#     bash benchmarks/pending_gpu.sh 3     # then 4, 5, 6
#
# (Parts 0-2 ran: the last of them on 2026-12-01, eighth session; their sections in RESULTS.md.)
#
# Each line updates its own section of benchmarks/RESULTS-TOPIC.md; a line that fails is reported and
# the part goes on. Wall times: measured where a line ran before, otherwise estimated (~).
# Every script here first ran on the CPU (`--smoke`, tests/bench), so a failure is a GPU matter.
# On the device tool each call runs on a fresh copy of the working tree and only $OUT comes back:
# after every line RESULTS.md and the JSON / PNG files this part wrote are copied there (the tool
# returns a limited number of files: copying every JSON lost two on 2026-11-28), and every line runs within
# the part's deadline (DEADLINE, 570 s); copy them into the tree before the next part (so its
# RESULTS.md holds the earlier sections). Afterwards `python3 benchmarks/targets.py`
# turns the JSON rows into the issues' target table (RESULTS.md section `targets`).
# Lessons of 2026-11-28: a fresh machine takes ~1 min to start and each torch.compile of a Base
# model ~20-30 s, so time few models per line; start the next call within the 30 s idle window.
set -uo pipefail

DEADLINE=${DEADLINE:-570}  # seconds this part may use: the device tool stops a call at 600

MARK=$(mktemp)  # files the part writes are newer than this: only they go back (the device tool caps the file count)
save() {  # what comes back from the device: copied after every line, so a stopped call loses nothing done
    [ -n "${OUT:-}" ] || return 0
    cp benchmarks/RESULTS*.md "$OUT"/
    find benchmarks/results -maxdepth 1 -newer "$MARK" \( -name '*.json' -o -name '*.png' \) -exec cp {} "$OUT"/ \;
    python3 benchmarks/targets.py --results "$OUT/RESULTS.md" >/dev/null 2>&1 || true
}

run() {  # run one benchmark within the part's deadline, report its wall time and exit status, never stop the part
    local t0=$SECONDS left=$((DEADLINE - SECONDS))
    if [ "$left" -le 10 ]; then echo "=== skipped (deadline): $*"; return; fi
    echo "=== $*"
    timeout "$left" "$@"
    echo "=== exit $? after $((SECONDS - t0)) s: $*"
    save
}

case "${1:-}" in
3)  # issue 7 compiled: batch 1 at 16k is launch-bound (profile: 10.2 ms of kernels in a 22.9 ms
    # step), so CUDA graphs first, then plain compile
    run python3 benchmarks/colt5.py --compile --cuda-graphs --seq 16384 --skip-decode --repeats 3 --warmup 2
    run python3 benchmarks/colt5.py --compile --seq 16384 --skip-decode --repeats 3 --warmup 2      # ~7 min
    ;;
4)  # issue 6: with CUDA graphs for BERT and FNet alike, the mixing sublayer alone by length and the
    # 8192 profile (the 2026-11-28 run stopped before them)
    run python3 benchmarks/fnet.py --compile --cuda-graphs --seq 512 2048 8192 --repeats 5 --warmup 2 \
        --models ours-bert ours-fnet-fft ours-fnet-dft
    run python3 benchmarks/fnet.py --compile --profile --seq 8192 --models ours-bert ours-fnet-fft
    ;;
5)  # if time remains: the eager rows of the split MoE / Sparse Mixer scripts
    run python3 benchmarks/moe.py                                                   # ~1.5 min
    run python3 benchmarks/sparse_mixer.py                                          # ~1.5 min
    ;;
6)  # if time remains: issue 7's eager grid and plot after the router / bias fixes
    run python3 benchmarks/colt5.py --seq 4096 16384 65536 --repeats 3 --warmup 1   # 3.5 min
    ;;
*)
    echo "usage: bash benchmarks/pending_gpu.sh 3|4|5|6" >&2
    exit 2
    ;;
esac
# On the 2-GPU machine (nvidia-h200-x2): MoWE-Base now has decoder MoWE layers and the grouped-GEMM
# dispatch (the rows in RESULTS.md measured the fallback path); re-measure it:
# python3 benchmarks/distributed.py --data .pack/corpus-base-words --steps 30 --presets mowe-base
