#!/usr/bin/env bash
# `frugal compare` recipes on a lent GPU machine (the device tool's `run`, from the repository root):
# install the wheels its image lacks (.whl/: omegaconf and antlr4), unpack the data packed here
# (.pack/data.tar.xz, `frugal data pack corpus classify ... --out .pack/data.tar.xz`), run the recipes
# side by side (RECIPE:WORKERS), each stopped after BUDGET seconds (default 540); every 30 s and at the
# end each run folder, without checkpoints, is packed into $OUT/NAME.tar.xz, so a call cut off still
# brings back every finished cell (carry runs/compare/NAME to a later call and it resumes there).
#
#   bash benchmarks/compare_on_gpu.sh fnet-small:6
#   BUDGET=500 bash benchmarks/compare_on_gpu.sh gqa-small:3 colt5-small:2
set -uo pipefail
export PYTHONUNBUFFERED=1 FRUGAL_HOME=${FRUGAL_HOME:-/tmp/frugal}
OUT=${OUT:-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src
python3 -m frugalformers.cli data unpack .pack/data.tar.xz || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

snapshot() {
  for r in "$@"; do
    name=${r%%:*}
    [ -d "runs/compare/$name" ] || continue
    tar -cJf "$OUT/$name.tar.xz.part" --exclude=checkpoints --exclude=converted --exclude='*.safetensors' \
      --exclude='*.pt' --exclude=tensorboard --exclude=.lock -C runs/compare "$name" && mv "$OUT/$name.tar.xz.part" "$OUT/$name.tar.xz"
  done
}

for r in "$@"; do
  name=${r%%:*}
  workers=${r##*:}
  resume=""
  [ -f "runs/compare/$name/recipe.yaml" ] && resume=--resume
  timeout --signal=INT "${BUDGET:-540}" python3 -m frugalformers.cli compare "recipes/$name.yaml" \
    --out "runs/compare/$name" --workers "$workers" $resume > "$OUT/$name.log" 2>&1 &
done
while [ -n "$(jobs -r)" ]; do
  sleep 30
  snapshot "$@"
done
wait
snapshot "$@"
for r in "$@"; do
  echo "=== ${r%%:*}"
  grep -v '^\[' "$OUT/${r%%:*}.log" | tail -n 40
done
