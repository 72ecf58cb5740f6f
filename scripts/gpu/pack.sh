#!/usr/bin/env bash
# Packs what a GPU-machine command needs and cannot install there (no Node, no
# registry; see ../shared/gpu.md) into .gpu/ (git-ignored), under the 64 MiB
# carry limit: the Node binary (node.xz) and node_modules without the parts
# that only build or bundle here (nm.tar.xz). Run it again after a dependency
# changes. Carry [".gpu", "dist"] and run scripts/gpu/session.sh there.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .gpu
[ -f .gpu/node.xz ] || xz -T2 -6 -c "$(command -v node)" > .gpu/node.xz
tar -cf - \
  --exclude='node_modules/tokenizers/tokenizers.[!l]*.node' \
  --exclude='node_modules/tokenizers/tokenizers.linux-arm*.node' \
  --exclude='node_modules/tokenizers/tokenizers.linux-x64-musl.node' \
  --exclude='node_modules/@esbuild' --exclude='node_modules/esbuild' \
  --exclude='node_modules/rollup' --exclude='node_modules/@rollup' \
  --exclude='node_modules/tsup' --exclude='node_modules/sucrase' \
  --exclude='node_modules/node-gyp' --exclude='node_modules/prebuildify' \
  --exclude='node_modules/cacache' --exclude='node_modules/caniuse-lite' \
  --exclude='node_modules/@img/sharp-linuxmusl-*' \
  --exclude='*.d.ts.map' --exclude='*.js.map' \
  node_modules | xz -T2 -6 > .gpu/nm.tar.xz
du -h .gpu/*
