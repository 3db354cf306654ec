#!/usr/bin/env bash
# GPU measurements written but not yet run (device time ran out in the session that wrote them).
# One H200; run from the repository root with the project on PYTHONPATH (see the device notes in
# benchmarks/RESULTS.md headers). Each line updates its own section of benchmarks/RESULTS.md.
# Rough wall times measured or estimated on one H200: colt5 ~3.5 min, mowe ~2 min (untried),
# sparse_mixer --compile ~3 min (untried), fnet --compile ~2 min.
set -euo pipefail
python3 benchmarks/colt5.py --seq 4096 16384 65536 --repeats 3 --warmup 1   # issue 7: the grid and plot after the router / bias fixes
python3 benchmarks/mowe.py                                                   # issue 8: 4K / 32K / 128K experts; MoWE-Base vs T5-Base vs Switch-Base
python3 benchmarks/sparse_mixer.py --compile                                 # issue 9: compiled MoE layer and Sparse Mixer
python3 benchmarks/fnet.py --compile --seq 512 8192                          # issue 6: adds the rfft half-spectrum FNet rows
# On the 2-GPU machine (nvidia-h200-x2): MoWE-Base now has decoder MoWE layers too; re-measure it.
# python3 benchmarks/distributed.py --data .pack/corpus-base-words --steps 30 --presets mowe-base
