#!/usr/bin/env bash
# Issue 6's CPU benchmark in one command, side by side in one run:
#   ours     benchmarks/method.js through the TypeScript API, the library's
#            defaults ("ngate") and the same engine as a plain loop ("plain");
#   theirs   benchmarks/method_hf.py, the transformers baseline (forward hooks,
#            one pair at a time, full recompute), on the exact inputs ours
#            exported, then the masks of both compared.
# Each repeat runs ours and then theirs, so that a busy machine slows both.
#
#   bash benchmarks/cpu-method.sh                          # ours only, the demo model
#   PYTHON=python3 bash benchmarks/cpu-method.sh           # with the baseline (torch + transformers)
#
# Settings: REPEATS=3, CASES=demo,llava-small, OUT=/tmp/ngate-cpu-method.
# Cases:
#   demo         the embedded demo model (LLaMA, 2.2 M parameters), 32 pairs, mask layer 3;
#   llava-small  a random LLaVA checkpoint written by transformers
#                (scripts/gpu/make_llava_reference.py: decoder 6 layers of 256, CLIP 4 layers
#                at 224 px, so 256 image positions in front of the question), 16 pairs with
#                the same image, mask layer 2; the baseline learns masks for 4 of them.
#                Needs PYTHON (transformers writes the checkpoint).
# Build first (npm test, or scripts/setup.sh and scripts/build-dist.sh). Debian 12 has
# PyTorch for Python (apt-get install python3-torch) but not transformers, which comes
# from PyPI; without a Python that imports both, only our side runs and this says so.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/ngate-cpu-method}"; mkdir -p "$OUT"
REPEATS=${REPEATS:-3}
CASES=",${CASES:-demo,llava-small},"
PY="${PYTHON:-}"
[ -f dist/index.js ] || { echo "dist/ is missing: run npm test (or scripts/setup.sh and scripts/build-dist.sh) first" >&2; exit 1; }
hf=""
if [ -n "$PY" ] && "$PY" -c 'import torch, transformers' 2> "$OUT/python-check.log"; then
  hf=1
  "$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
else
  echo "no transformers baseline: set PYTHON to a Python that imports torch and transformers ($(tail -1 "$OUT/python-check.log" 2>/dev/null))"
fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
rm -f "$OUT"/*.jsonl

# run_case NAME MODEL BASE_PAIRS METHOD_ARGS...: REPEATS × (ours, theirs), then the mask comparison.
run_case() {
  local name=$1 model=$2 base=$3; shift 3
  for i in $(seq 1 "$REPEATS"); do
    node benchmarks/method.js --model "$model" "$@" --export "$OUT/$name.inputs.json" --tag "$name" \
      >> "$OUT/$name.ours.jsonl" 2>> "$OUT/$name.err" || { echo "$name: ours failed"; tail -5 "$OUT/$name.err"; return 1; }
    if [ -n "$hf" ]; then
      "$PY" benchmarks/method_hf.py --data "$OUT/$name.inputs.json" --model "$model" --out "$OUT/$name.hf.json" \
        --device cpu --dtype float32 --pairs "$base" 2>> "$OUT/$name.err" \
        | sed -n "s/^{\"kind\"/{\"side\": \"transformers\", \"tag\": \"$name\", \"kind\"/p" >> "$OUT/$name.hf.jsonl" \
        || { echo "$name: transformers failed"; tail -5 "$OUT/$name.err"; return 1; }
    fi
    echo "$name: run $i of $REPEATS done"
  done
  if [ -n "$hf" ]; then
    node benchmarks/method.js --model "$model" "$@" --pairs "$base" --sides ngate --tasks mask \
      --compare "$OUT/$name.hf.json" --tag "$name" 2>> "$OUT/$name.err" | grep '"kind":"summary"' >> "$OUT/$name.compare.jsonl"
  fi
}

if [[ "$CASES" == *",demo,"* ]]; then
  run_case demo models/demo 32 --pairs 32 --layer 3
fi
if [[ "$CASES" == *",llava-small,"* ]]; then
  if [ -z "$hf" ]; then
    echo "llava-small: skipped (transformers writes its checkpoint)"
  else
    ckpt="$OUT/llava-small"
    [ -f "$ckpt/config.json" ] || "$PY" scripts/gpu/make_llava_reference.py --out "$ckpt" --dtype float32 --device cpu \
      --impls "" --layers 6 --hidden 256 --heads 4 --intermediate 688 --vision-layers 4 --vision-hidden 128 \
      --vision-heads 4 --vision-intermediate 512 --image-size 224 --patch 14 --std 0.02 > "$OUT/llava-small.make.log" 2>&1 \
      || { tail -5 "$OUT/llava-small.make.log"; exit 1; }
    run_case llava-small "$ckpt" 4 --image "$ckpt/image_exact.png" --pairs 16 --layer 2 --plain-pairs 4
  fi
fi
node benchmarks/lib/method-table.js "$OUT"/*.jsonl | tee "$OUT/table.md"
