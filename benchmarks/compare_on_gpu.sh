#!/usr/bin/env bash
# `frugal compare` recipes on a lent GPU machine (the device tool's `run`, from the repository root):
# install the wheels its image lacks (.whl/: omegaconf and antlr4), unpack the data packed here
# (PACK: one or more files, default .pack/data.tar.xz: `frugal data pack corpus classify --out
# .pack/data.tar.xz`; once per machine), run the recipes side by side (RECIPE:WORKERS) with their timing
# cells held back, then each recipe's timings alone on the GPU, all within BUDGET seconds (default 540). Every 30 s and at the end
# each run folder, without checkpoints, is packed into $OUT/NAME.tar.xz, so a call cut off still brings
# back every finished cell. A later call on the same (warm) machine resumes each run where it stopped;
# on a fresh machine, carry runs/compare/NAME (a pretraining whose checkpoint is gone runs again).
#
#   bash benchmarks/compare_on_gpu.sh fnet-small:6
#   BUDGET=500 bash benchmarks/compare_on_gpu.sh gqa-small:3 fnet-small:6
#   PACK='.pack/data.tar.xz .pack/colt5.tar.xz' bash benchmarks/compare_on_gpu.sh fnet-small:6 colt5-small:2
# (.pack/colt5.tar.xz: `frugal data pack corpus longdoc --tokenizer base --out .pack/colt5.tar.xz`)
#   PACK='.pack/data.tar.xz .pack/knowledge.tar.xz' bash benchmarks/compare_on_gpu.sh mowe-small-mixed:4
#   (the mowe recipes' `mix:` block makes their pretraining mixture; PREP runs any other command first)
set -uo pipefail
export PYTHONUNBUFFERED=1 FRUGAL_HOME=${FRUGAL_HOME:-/tmp/frugal}
OUT=${OUT:-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src
for pack in ${PACK:-.pack/data.tar.xz}; do  # once per machine
  marker="$FRUGAL_HOME/.unpacked-$(basename "$pack")"
  [ -f "$marker" ] && continue
  python3 -m frugalformers.cli data unpack "$pack" || exit 1
  touch "$marker"
done
[ -n "${PREP:-}" ] && { eval "$PREP" || exit 1; }  # e.g. `frugal data mix` for a recipe's mixture
deadline=$(( $(date +%s) + ${BUDGET:-540} ))
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

snapshot() {
  for r in "$@"; do
    name=${r%%:*}
    [ -d "runs/compare/$name" ] || continue
    tar -cJf "$OUT/$name.tar.xz.part" --exclude=checkpoints --exclude=converted --exclude='*.safetensors' \
      --exclude='*.pt' --exclude=tensorboard --exclude=.lock -C runs/compare "$name" && mv "$OUT/$name.tar.xz.part" "$OUT/$name.tar.xz"
  done
}

run_recipe() {  # NAME WORKERS SECONDS [--skip KINDS]
  local name=$1 workers=$2 seconds=$3 resume=""
  shift 3
  [ -f "runs/compare/$name/recipe.yaml" ] && resume=--resume
  timeout --signal=INT "$seconds" python3 -m frugalformers.cli compare "recipes/$name.yaml" \
    --out "runs/compare/$name" --workers "$workers" $resume "$@" >> "$OUT/$name.log" 2>&1
}

skip=()
[ $# -gt 1 ] && skip=(--skip speed,decode)  # timings wait until no other recipe shares the GPU
for r in "$@"; do
  run_recipe "${r%%:*}" "${r##*:}" "${BUDGET:-540}" "${skip[@]}" &
done
while [ -n "$(jobs -r)" ]; do
  sleep 30
  snapshot "$@"
done
wait
if [ $# -gt 1 ]; then
  for r in "$@"; do  # each recipe alone: its timings (and anything a cut-off left)
    left=$(( deadline - $(date +%s) ))
    [ "$left" -gt 20 ] && run_recipe "${r%%:*}" "${r##*:}" "$left"
  done
fi
snapshot "$@"
for r in "$@"; do
  echo "=== ${r%%:*}"
  grep -v '^\[' "$OUT/${r%%:*}.log" | tail -n 40
done
