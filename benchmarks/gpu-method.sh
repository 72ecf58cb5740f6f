#!/usr/bin/env bash
# Issue 6's measurement on the GPU machine, in one command (after
# scripts/gpu/session.sh has unpacked Node and built the addon, or with
# BUILD=1 to do both here): a LLaVA-1.5-7B-shaped checkpoint with random
# weights in bfloat16 (CLIP ViT-L/14-336 → 576 image positions in front of the
# question, LLaMA-7B decoder), then
#   1. ours through the TypeScript API (benchmarks/method.js, --export of the exact inputs),
#   2. the transformers baseline on the same inputs (benchmarks/method_hf.py),
#   3. ours again on the masks only, compared with the baseline's (--compare),
# with nvidia-smi sampled every 100 ms during each step for the peak GPU memory
# (the same measure for both sides). Logs and JSON land in $OUT.
#
#   OUT=/tmp/o bash benchmarks/gpu-method.sh      # PAIRS=32 BASE_PAIRS=4 LAYER=8 STEPS=20 EPOCHS=2 BATCH=16
#
# STAGES (default ckpt,ours,hf,compare) picks the steps, so that a run too long
# for one command (the device tool allows 10 minutes) can be split over calls
# while the machine stays warm: the checkpoint and inputs.json stay in /tmp.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/ngate-out}"; mkdir -p "$OUT"
PAIRS=${PAIRS:-32} BASE_PAIRS=${BASE_PAIRS:-4} LAYER=${LAYER:-8} STEPS=${STEPS:-20} EPOCHS=${EPOCHS:-2}
# 16 pairs (32 sequences of ~950 positions) per mask batch: by our estimate about 36 GB of kept
# keys/values and saved activations on the 7B shape beside the 14 GB of weights; 32 would not fit in 80 GB.
BATCH=${BATCH:-16}
CKPT=${CKPT:-/tmp/llava-7b-shape}
# inputs.json and hf.json are read by later stages, which may run in later calls (a new $OUT each).
WORK=${WORK:-/tmp/ngate-method}; mkdir -p "$WORK"
if [ -n "${BUILD:-}" ]; then
  xz -d -c .gpu/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:$PATH
  [ -d node_modules ] || tar -xJf .gpu/nm.tar.xz
  export CMAKE_PREFIX_PATH=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
  NGATE_CUDA_ARCHITECTURES=90 NGATE_BUILD_JOBS=16 node scripts/build-native.js > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
fi
export PATH=/tmp:$PATH

peak() {  # peak() NAME CMD...: runs CMD while sampling GPU memory; writes $OUT/NAME.mem
  local name=$1; shift
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$OUT/$name.mem.log" 2>/dev/null &
  local sampler=$!
  "$@"; local rc=$?
  kill $sampler 2>/dev/null; wait $sampler 2>/dev/null
  echo "$name peak GPU memory (MiB, nvidia-smi): $(sort -n "$OUT/$name.mem.log" | tail -1)" | tee "$OUT/$name.mem"
  return $rc
}

STAGES=",${STAGES:-ckpt,ours,hf,compare},"
stage() { [[ "$STAGES" == *",$1,"* ]]; }
t0=$(date +%s)
if stage ckpt && [ ! -f "$CKPT/config.json" ]; then
  python3 scripts/gpu/make_llava_reference.py --out "$CKPT" --dtype bfloat16 --impls "" \
    --layers 32 --hidden 4096 --heads 32 --intermediate 11008 --vocab 32000 \
    --vision-layers 24 --vision-hidden 1024 --vision-heads 16 --vision-intermediate 4096 \
    --image-size 336 --patch 14 --std 0.02 > "$OUT/make-ckpt.log" 2>&1 || { tail -20 "$OUT/make-ckpt.log"; exit 1; }
fi
echo "checkpoint ready at $(( $(date +%s) - t0 )) s"
COMMON=(--model "$CKPT" --device cuda --dtype bfloat16 --image "$CKPT/image_exact.png" --layer "$LAYER" --steps "$STEPS" --epochs "$EPOCHS")
stage ours && peak ours node benchmarks/method.js "${COMMON[@]}" --pairs "$PAIRS" --batch "$BATCH" --sides ngate,plain --plain-pairs "$BASE_PAIRS" \
  --export "$WORK/inputs.json" --tag llava7b > "$OUT/ours.jsonl" 2> "$OUT/ours.err"
stage ours && { cp "$OUT/ours.jsonl" "$WORK/ours.jsonl"; echo "ours done at $(( $(date +%s) - t0 )) s"; cat "$OUT/ours.jsonl"; tail -5 "$OUT/ours.err"; }
stage hf && peak hf python3 benchmarks/method_hf.py --data "$WORK/inputs.json" --model "$CKPT" --out "$WORK/hf.json" --pairs "$BASE_PAIRS" \
  > "$OUT/hf.log" 2>&1
stage hf && { echo "transformers done at $(( $(date +%s) - t0 )) s"; grep '"kind"' "$OUT/hf.log"; tail -3 "$OUT/hf.log";
  sed -n 's/^{"kind"/{"side": "transformers", "tag": "llava7b", "kind"/p' "$OUT/hf.log" > "$WORK/hf.jsonl"; }
stage compare && node benchmarks/method.js "${COMMON[@]}" --pairs "$BASE_PAIRS" --sides ngate --tasks mask --compare "$WORK/hf.json" \
  --tag llava7b 2>> "$OUT/ours.err" | grep '"kind":"summary"' > "$OUT/compare.jsonl"
stage compare && { tail -1 "$OUT/compare.jsonl"; cp "$OUT/compare.jsonl" "$WORK/compare.jsonl"
  node benchmarks/lib/method-table.js "$WORK"/*.jsonl | tee "$OUT/table.md"; }
echo "all done at $(( $(date +%s) - t0 )) s"
