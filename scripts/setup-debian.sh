#!/usr/bin/env bash
# System packages the addon needs on Debian 12, installed only when missing:
# libtorch (CPU, PyTorch 1.13), OpenBLAS and Gloo's headers. Debian's libtorch
# links the reference BLAS through the libblas.so.3 alternative, which is ~30x
# slower than OpenBLAS for the matrix products that dominate a forward pass.
# libtorch-dev ships torch's distributed engine (c10d) and links libgloo, but
# nothing pulls in Gloo's headers: without libgloo-dev the addon builds
# without distributed support (see scripts/find-dist.js).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
node scripts/find-libtorch.js >/dev/null 2>&1 || need+=(libtorch-dev)
[ -n "$(node scripts/find-dist.js --defines 2>/dev/null)" ] || need+=(libgloo-dev)
if ! readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null | grep -q openblas; then
  [ -d /usr/lib/x86_64-linux-gnu ] && need+=(libopenblas0-pthread)
fi
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  if [[ " ${need[*]} " == *" libtorch-dev "* ]]; then
    node scripts/find-libtorch.js || true
    echo "setup: libtorch is missing and this script can only install it as root on Debian/Ubuntu." >&2
    exit 1
  fi
  [[ " ${need[*]} " == *" libopenblas0-pthread "* ]] && echo "setup: note: install libopenblas0-pthread for a much faster CPU libtorch." >&2
  [[ " ${need[*]} " == *" libgloo-dev "* ]] && echo "setup: note: install libgloo-dev for running on several processes (ngate launch)." >&2
  exit 0
fi
echo "setup: installing ${need[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
