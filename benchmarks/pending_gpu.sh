#!/usr/bin/env bash
# GPU measurements written but not yet run, in parts that each fit one 10-minute device call.
# One H200; run from the repository root with the project (and the carried wheels) on PYTHONPATH:
#
#     bash benchmarks/pending_gpu.sh 1     # then 2, 3, 4, 5
#
# Each line updates its own section of benchmarks/RESULTS.md; a line that fails is reported and
# the part goes on. Wall times: measured where a line ran before, otherwise estimated (~).
set -uo pipefail

run() {  # run one benchmark, report its wall time and exit status, never stop the part
    local t0=$SECONDS
    echo "=== $*"
    "$@"
    echo "=== exit $? after $((SECONDS - t0)) s: $*"
}

case "${1:-}" in
1)  # GPU fast paths vs references (incl. the opt-in decode kernels, generate(compile=True)); issues 7 and 6
    run python3 benchmarks/cuda_checks.py                                           # ~1 min
    run python3 benchmarks/colt5.py --seq 4096 16384 65536 --repeats 3 --warmup 1   # 3.5 min
    run python3 benchmarks/colt5.py --profile                                       # ~1 min
    run python3 benchmarks/fnet.py --compile --seq 512 8192                         # 2 min (+ rfft, half-spectrum dft rows)
    run python3 benchmarks/fnet.py --compile --profile --seq 512 8192               # ~1.5 min
    ;;
2)  # issue 9 (compiled MoE layer, Sparse Mixer) and issue 8 (MoWE layer and models)
    run python3 benchmarks/moe.py --compile                                         # ~2 min
    run python3 benchmarks/moe.py --compile --profile --experts 16 64               # ~1 min
    run python3 benchmarks/sparse_mixer.py --compile                                # ~2 min
    run python3 benchmarks/sparse_mixer.py --compile --profile                      # ~1 min
    run python3 benchmarks/mowe.py                                                  # ~2 min
    run python3 benchmarks/mowe.py --profile --experts 32768                        # ~0.5 min
    ;;
3)  # issue 10: the opt-in decode kernels against the default step in the same run, and where its time goes
    # (each compile of the 1B step takes ~30 s: 3 x (1 + 3 alts, MHA 2) compiles here, ~6 min; the rest in 5)
    run python3 benchmarks/gqa_decode.py --compile --batch 32 --ctx 1024 --variants MHA GQA-4 MQA \
        --alts split-K sdpa-grouped both --profile
    ;;
5)  # issue 10, the other variants (ctx 1024 only; the 16k rows of the compiled section stay from the last run)
    run python3 benchmarks/gqa_decode.py --compile --batch 32 --ctx 1024 --variants GQA-8 GQA-2 \
        --alts split-K sdpa-grouped both
    ;;
4)  # eager rows of the split benchmarks (sections moe and sparse-mixer-models)
    run python3 benchmarks/moe.py                                                   # ~1.5 min
    run python3 benchmarks/sparse_mixer.py                                          # ~1.5 min
    ;;
*)
    echo "usage: bash benchmarks/pending_gpu.sh 1|2|3|4|5" >&2
    exit 2
    ;;
esac
# On the 2-GPU machine (nvidia-h200-x2): MoWE-Base now has decoder MoWE layers too; re-measure it:
# python3 benchmarks/distributed.py --data .pack/corpus-base-words --steps 30 --presets mowe-base
