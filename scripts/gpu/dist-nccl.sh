#!/usr/bin/env bash
# Issue 15's GPU check, one command on the GPU machine (see ../shared/gpu.md):
# build the addon against the machine's CUDA libtorch with c10d's NCCL backend
# (nccl.h from the nvidia-nccl wheel beside torch; Gloo too when its headers
# are there), then
#   1. NCCL with one rank: the collectives (scripts/gpu/nccl-check.js), and the
#      method's equality tests on cuda with a group of one (test/dist.test.ts:
#      the data-parallel edit path against the one-process edit);
#   2. with several GPUs: the same tests with one rank per GPU, and
#      benchmarks/dist.js on 1 and all GPUs.
# Logs land in $OUT. Carry: .gpu (node.xz, nm.tar.xz: bash scripts/gpu/pack.sh), dist.
#
# Status: written for issue 15 on a machine without a GPU; it has NOT run yet.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/ngate-out}"; mkdir -p "$OUT"
t0=$(date +%s)
xz -d -c .gpu/node.xz > /tmp/node && chmod +x /tmp/node && export PATH=/tmp:$PATH
[ -d node_modules ] || tar -xJf .gpu/nm.tar.xz
export CMAKE_PREFIX_PATH=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
# nccl.h: the nvidia-nccl wheel torch depends on (find-dist.js also looks beside torch itself).
export NCCL_INCLUDE_DIR=${NCCL_INCLUDE_DIR:-$(python3 -c 'import os, nvidia.nccl as n; print(os.path.join(list(n.__path__)[0], "include"))' 2>/dev/null)}
export NGATE_CUDA_ARCHITECTURES=${NGATE_CUDA_ARCHITECTURES:-90} NGATE_BUILD_JOBS=16
NGPU=$(nvidia-smi -L | wc -l)
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c 'import torch;print(torch.__version__, torch.cuda.nccl.version())';
  echo "NCCL_INCLUDE_DIR=$NCCL_INCLUDE_DIR"; node scripts/find-dist.js --cuda $(node scripts/find-libtorch.js --include); } > "$OUT/env.log" 2>&1
cat "$OUT/env.log"
node scripts/build-native.js > "$OUT/build.log" 2>&1 || { grep -E 'error|ngate:' "$OUT/build.log" | head -40; tail -20 "$OUT/build.log"; exit 1; }
grep 'ngate:' "$OUT/build.log"
echo "build done in $(( $(date +%s) - t0 )) s"
node -e "const a=require('./build/Release/ngate.node'); console.log(a.info(), a.distBackends())"

# 1. One rank through NCCL.
timeout 120 node bin/ngate.js launch --nproc-per-node 1 --exec -- node scripts/gpu/nccl-check.js > "$OUT/nccl-w1.log" 2>&1
echo "nccl W=1 collectives: rc=$? $(tail -1 "$OUT/nccl-w1.log")"
NGATE_TEST_DEVICE=cuda NGATE_TEST_DIST_RANKS=1 timeout 300 node node_modules/jest/bin/jest.js test/dist.test.ts test/process-group.test.ts > "$OUT/jest-w1.log" 2>&1
echo "jest cuda W=1: rc=$? $(grep -E '^Tests:' "$OUT/jest-w1.log") $(grep -o 'data-parallel edit.*' "$OUT/jest-w1.log")"
grep -E '✕' "$OUT/jest-w1.log" | head -20

# 2. One rank per GPU.
if [ "$NGPU" -gt 1 ]; then
  timeout 120 node bin/ngate.js launch --nproc-per-node "$NGPU" --exec -- node scripts/gpu/nccl-check.js > "$OUT/nccl-wn.log" 2>&1
  echo "nccl W=$NGPU collectives: rc=$? $(tail -1 "$OUT/nccl-wn.log")"
  NGATE_TEST_DEVICE=cuda NGATE_TEST_DIST_RANKS=$NGPU timeout 300 node node_modules/jest/bin/jest.js test/dist.test.ts > "$OUT/jest-wn.log" 2>&1
  echo "jest cuda W=$NGPU: rc=$? $(grep -E '^Tests:' "$OUT/jest-wn.log") $(grep -o 'data-parallel edit.*' "$OUT/jest-wn.log")"
  grep -E '✕' "$OUT/jest-wn.log" | head -20
  timeout 300 node benchmarks/dist.js --device cuda --ranks "1,$NGPU" --repeats 2 --pairs 64 > "$OUT/bench.log" 2>&1
  echo "bench: rc=$?"; tail -4 "$OUT/bench.log"
fi
echo "all done at $(( $(date +%s) - t0 )) s"
