#!/usr/bin/env bash
# One GPU session's worth of checks, in one command (see benchmarks/README.md):
#   1. parity: make_reference.py (transformers) for {float32, bfloat16} x {GQA, MHA tied}
#      small random LLaMAs, then scripts/gpu/compare.js against each;
#   2. speed: a TinyLlama-1.1B-shaped random checkpoint (written by transformers,
#      bf16), benchmarks/run.js and benchmarks/hf_bench.py on it, side by side.
# Every step's output is tee'd into $OUT/<step>.log; $OUT/summary.json folds it all.
# Assumes the CUDA addon (a build for the CUDA libtorch: node scripts/build-native.js) and dist/ are built.
#
#   OUT=/some/dir bash benchmarks/gpu.sh
#
# Knobs (environment): DEVICE (cuda), PYTHON (python3 with torch + transformers),
# NGATE_DIST (dist/), WORK (/tmp/ngate-gpu), BUDGET_S (420: steps that would start
# later are skipped), BIG_ARGS / BIG_VOCAB (the benchmark model's shape),
# BENCH_BATCH, BENCH_SEQ, GEN_BATCH, GEN_SEQ, NEW_TOKENS, REPEATS, WARMUP, DTYPES.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START=$(date +%s)

OUT="${OUT:-$ROOT/.bench/gpu-out}"
WORK="${WORK:-/tmp/ngate-gpu}"
DEVICE="${DEVICE:-cuda}"
BUDGET_S="${BUDGET_S:-420}"
DTYPES="${DTYPES:-float32 bfloat16}"
BIG_NAME="${BIG_NAME:-llama-1b}"
BIG_ARGS="${BIG_ARGS:---layers 22 --hidden 2048 --heads 32 --kv-heads 4 --intermediate 5632 --vocab 32000}"
BIG_VOCAB="${BIG_VOCAB:-32000}"
BENCH_BATCH="${BENCH_BATCH:-1,8}"
BENCH_SEQ="${BENCH_SEQ:-128,512}"
GEN_BATCH="${GEN_BATCH:-1,8}"
GEN_SEQ="${GEN_SEQ:-32}"
NEW_TOKENS="${NEW_TOKENS:-128}"
REPEATS="${REPEATS:-3}"
WARMUP="${WARMUP:-1}"
export NGATE_DIST="${NGATE_DIST:-$ROOT/dist}"

mkdir -p "$OUT"
rm -rf "$WORK"
mkdir -p "$WORK"
STEPS="$OUT/steps.tsv"
: > "$STEPS"

# Node: the compressed binary carried in .gpu/ (gpu.md) when none is on PATH.
if ! command -v node >/dev/null 2>&1; then
  if [ -f .gpu/node.xz ]; then
    xz -d -c .gpu/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:$PATH
  else
    echo "no node on PATH and no .gpu/node.xz" >&2
    exit 2
  fi
fi
# Python with torch and transformers.
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  if ! python3 -c 'import torch, transformers' >/dev/null 2>&1 && [ -x /opt/torch/.venv/bin/python3 ]; then
    PYTHON=/opt/torch/.venv/bin/python3
  fi
fi

# step NAME TIMEOUT_S CMD...: runs CMD, output to the terminal and $OUT/NAME.log, row in steps.tsv.
FAILED=0
step() {
  local name=$1 limit=$2
  shift 2
  local elapsed=$(( $(date +%s) - START ))
  if (( elapsed + 15 > BUDGET_S )); then
    echo "== $name: skipped, ${elapsed}s of the ${BUDGET_S}s budget used" | tee "$OUT/$name.log"
    printf '%s\t%s\t%s\n' "$name" -1 0 >> "$STEPS"
    FAILED=$((FAILED + 1))
    return 1
  fi
  local t0 t1 rc
  t0=$(date +%s.%N)
  echo "== $name: $*" | tee "$OUT/$name.log"
  timeout "$limit" "$@" 2>&1 | tee -a "$OUT/$name.log"
  rc=${PIPESTATUS[0]}
  t1=$(date +%s.%N)
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(awk "BEGIN{printf \"%.1f\", $t1 - $t0}")" >> "$STEPS"
  echo "== $name: exit $rc"
  if [ "$rc" -ne 0 ]; then FAILED=$((FAILED + 1)); fi
  return "$rc"
}

# ---- environment -----------------------------------------------------------
{
  echo "date: $(date -u +%FT%TZ)"
  echo "node: $(node --version) at $(command -v node)"
  echo "python: $PYTHON"
  "$PYTHON" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available()); print("transformers", transformers.__version__)' 2>&1
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  node -e "const l=require(process.env.NGATE_DIST); console.log('ngate', JSON.stringify(l.nativeInfo()))" 2>&1
  git -C "$ROOT" log -1 --format='commit: %H %s' 2>/dev/null
  git -C "$ROOT" status --short 2>/dev/null | head -20
} 2>&1 | tee "$OUT/env.log"
if [ "$DEVICE" != cpu ] && ! node -e "process.exit(require(process.env.NGATE_DIST).nativeInfo().cuda ? 0 : 3)"; then
  echo "the addon at NGATE_DIST=$NGATE_DIST has no CUDA: build it for CUDA first (see /work/shared/gpu.md)" | tee -a "$OUT/env.log"
  node benchmarks/lib/summarize.js "$OUT" > /dev/null
  exit 3
fi

# ---- 1. parity against transformers ------------------------------------------
CONFIGS=(
  "gqa|--layers 4 --hidden 256 --heads 8 --kv-heads 2 --intermediate 688 --vocab 1024"
  "mha-tied|--layers 3 --hidden 192 --heads 6 --kv-heads 6 --intermediate 512 --vocab 1000 --tie"
)
for dtype in $DTYPES; do
  for c in "${CONFIGS[@]}"; do
    name="${c%%|*}"
    args="${c#*|}"
    vocab=$(sed -E 's/.*--vocab ([0-9]+).*/\1/' <<< "$args")
    tok="$WORK/tok-$vocab"
    [ -f "$tok/tokenizer.json" ] || node benchmarks/lib/checkpoint.js tokenizer "$tok" --vocab "$vocab" > /dev/null
    dir="$WORK/$name-$dtype"
    # shellcheck disable=SC2086
    step "ref-$name-$dtype" 150 "$PYTHON" scripts/gpu/make_reference.py --out "$dir" --dtype "$dtype" $args \
        --tokenizer-from "$tok" --device "$DEVICE" \
      && step "compare-$name-$dtype" 150 node scripts/gpu/compare.js "$dir" --device "$DEVICE" --dtype "$dtype"
  done
done

# ---- 2. 1B-shaped speed, @ngate/core against transformers ----------------------
BIG="$WORK/$BIG_NAME"
node benchmarks/lib/checkpoint.js tokenizer "$WORK/tok-$BIG_VOCAB" --vocab "$BIG_VOCAB" > /dev/null
BENCH_ARGS=(--device "$DEVICE" --dtype bfloat16 --batch "$BENCH_BATCH" --seq "$BENCH_SEQ" --gen-batch "$GEN_BATCH"
  --gen-seq "$GEN_SEQ" --new-tokens "$NEW_TOKENS" --repeats "$REPEATS" --warmup "$WARMUP")
# shellcheck disable=SC2086
if step "write-$BIG_NAME" 240 "$PYTHON" scripts/gpu/make_reference.py --no-reference --out "$BIG" --dtype bfloat16 \
    $BIG_ARGS --tokenizer-from "$WORK/tok-$BIG_VOCAB" --device "$DEVICE"; then
  step "bench-ngate-$BIG_NAME" 300 node benchmarks/run.js --model "$BIG" "${BENCH_ARGS[@]}"
  step "bench-hf-$BIG_NAME" 300 "$PYTHON" benchmarks/hf_bench.py --model "$BIG" "${BENCH_ARGS[@]}"
fi

# ---- summary -------------------------------------------------------------------
echo "== total $(( $(date +%s) - START ))s, $FAILED step(s) failed or skipped" | tee -a "$OUT/env.log"
node benchmarks/lib/summarize.js "$OUT" | tee "$OUT/summary.log"
[ "$FAILED" -eq 0 ]
