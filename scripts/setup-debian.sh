#!/usr/bin/env bash
# System packages the addon needs on Debian 12, installed only when missing:
# libtorch (CPU, PyTorch 1.13), OpenBLAS and Gloo's headers. Debian's libtorch
# links the reference BLAS through the libblas.so.3 alternative, which is ~30x
# slower than OpenBLAS for the matrix products that dominate a forward pass.
# libtorch-dev ships torch's distributed engine (c10d) and links libgloo, but
# nothing pulls in Gloo's headers: without libgloo-dev the addon builds
# without distributed support (see scripts/find-dist.js).
# python3-torch (the same PyTorch 1.13, for /usr/bin/python3): the tests that
# check our torch.save reader and writer against real torch.save/torch.load.
# cmake and g++: the addon's build, when the machine lacks them.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
node scripts/find-libtorch.js >/dev/null 2>&1 || need+=(libtorch-dev)
[ -n "$(node scripts/find-dist.js --defines 2>/dev/null)" ] || need+=(libgloo-dev)
if ! readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null | grep -q openblas; then
  [ -d /usr/lib/x86_64-linux-gnu ] && need+=(libopenblas0-pthread)
fi
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
if [ -x /usr/bin/python3 ] || command -v apt-get >/dev/null; then
  /usr/bin/python3 -c 'import torch' >/dev/null 2>&1 || need+=(python3-torch)
fi
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  if [[ " ${need[*]} " == *" libtorch-dev "* || " ${need[*]} " == *" cmake "* || " ${need[*]} " == *" g++ "* ]]; then
    node scripts/find-libtorch.js || true
    echo "setup: ${need[*]} missing, and this script can only install them as root on Debian/Ubuntu." >&2
    exit 1
  fi
  echo "setup: note: install ${need[*]} (libopenblas0-pthread: a much faster CPU libtorch; libgloo-dev: several processes, ngate launch; python3-torch: the torch.save cross-checks, skipped without it)." >&2
  exit 0
fi
echo "setup: installing ${need[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
