#!/usr/bin/env bash
# What one GPU-machine command runs (see ../shared/gpu.md): unpack the carried
# Node and node_modules, build the CUDA addon, run the model and method tests
# on cuda in float32 and bfloat16, the LLaVA parity run, then the parity and speed runs of
# benchmarks/gpu.sh (SKIP_BENCH=1 skips them), and with METHOD_BENCH=1 the method
# benchmark of benchmarks/gpu-method.sh. Logs land in $OUT. Carry: .gpu
# (node.xz, nm.tar.xz: bash scripts/gpu/pack.sh), dist.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/ngate-out}"; mkdir -p "$OUT"
t0=$(date +%s)
xz -d -c .gpu/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:$PATH
[ -d node_modules ] || tar -xJf .gpu/nm.tar.xz
export CMAKE_PREFIX_PATH=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
export NGATE_CUDA_ARCHITECTURES=${NGATE_CUDA_ARCHITECTURES:-90} NGATE_BUILD_JOBS=16
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c 'import torch,transformers;print(torch.__version__, transformers.__version__)'; } > "$OUT/env.log" 2>&1
node scripts/build-native.js > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "build done in $(( $(date +%s) - t0 )) s"; node -e "require('./dist/index.js').nativeInfo().then((i) => console.log(i))"
for dt in float32 bfloat16; do
  NGATE_TEST_DEVICE=cuda NGATE_TEST_DTYPE=$dt node node_modules/jest/bin/jest.js ${TESTS:-test/model.test.ts test/method.test.ts test/llava.test.ts} > "$OUT/jest-$dt.log" 2>&1
  echo "jest cuda $dt: rc=$? $(grep -E '^Tests:' "$OUT/jest-$dt.log")"
  grep -E '✕' "$OUT/jest-$dt.log" | head -20
done
echo "tests done at $(( $(date +%s) - t0 )) s"
# LLaVA parity: a random-init LlavaForConditionalGeneration saved by this
# transformers, against our loader, preprocessing, forward and generate.
if [ -z "${SKIP_LLAVA:-}" ]; then
  for dt in float32 bfloat16; do
    python3 scripts/gpu/make_llava_reference.py --out "/tmp/llava-ref-$dt" --dtype $dt > "$OUT/llava-ref-$dt.log" 2>&1 \
      && node scripts/gpu/compare_llava.js "/tmp/llava-ref-$dt" --device cuda > "$OUT/llava-parity-$dt.log" 2>&1
    echo "llava parity $dt: rc=$? $(grep '"summary"' "$OUT/llava-parity-$dt.log" 2>/dev/null || tail -3 "$OUT/llava-ref-$dt.log")"
  done
fi
[ -n "${SKIP_BENCH:-}" ] || OUT="$OUT" BUDGET_S=${BUDGET_S:-360} bash benchmarks/gpu.sh > "$OUT/gpu-sh.log" 2>&1
# Issue 6's method benchmark (LLaVA-1.5-7B shape, ours vs transformers), when asked for.
[ -z "${METHOD_BENCH:-}" ] || OUT="$OUT" bash benchmarks/gpu-method.sh > "$OUT/gpu-method.log" 2>&1
echo "all done at $(( $(date +%s) - t0 )) s"
tail -30 "$OUT/gpu-sh.log" 2>/dev/null
