#!/bin/bash
# The device tool carries at most 64 MiB (working tree + carried paths). The tree (models/ ~28 MB) plus
# ../shared/device/pack.sh's .device/ (~41 MB) is over, and the GPU machine is released after 30 s idle,
# so the run goes in two back-to-back calls:
#   1. carry [".gpu-a"]:          mkdir -p /tmp/nodebin && xz -dc .gpu-a/node.xz > /tmp/nodebin/node && chmod +x /tmp/nodebin/node
#   2. carry [".gpu-b", "dist"]:  source .gpu-b/setup.sh && bash scripts/gpu/run.sh
# This script (run here after `npx tsc -p . && bash ../shared/device/pack.sh`) makes .gpu-a (node) and
# .gpu-b (node_modules slimmed of build-time files and other platforms' zeromq builds, the Vulkan loader
# packages, setup.sh), both git-ignored through .git/info/exclude.
set -euo pipefail
root=$(git rev-parse --show-toplevel); cd "$root"
[ -s .device/deps.tar.xz ] || { echo "run ../shared/device/pack.sh first" >&2; exit 2; }
for d in .gpu-a .gpu-b; do grep -qx "/$d/" .git/info/exclude || echo "/$d/" >> .git/info/exclude; done
rm -rf .gpu-a .gpu-b; mkdir -p .gpu-a .gpu-b
cp .device/node.xz .gpu-a/
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
tar -C "$tmp" -xJf .device/deps.tar.xz
z=$tmp/node_modules/zeromq/build/linux/x64/node
rm -rf "$z/64" "$z/108" "$z/115" "$z/glibc-147-Release" "$tmp/node_modules/zod/src" "$tmp/node_modules/cmake-ts/src" \
  "$tmp/node_modules/node-addon-api" "$tmp"/node_modules/cmake-ts/build/main.* "$tmp/node_modules/msgpackr/dist/test.js"
find "$tmp/node_modules" \( -name '*.d.ts' -o -name '*.d.cts' -o -name '*.d.mts' -o -name '*.map' -o -name '*.md' \) -delete
tar -C "$tmp" -cf - node_modules | xz -T0 -9 > .gpu-b/deps.tar.xz
cp .device/*.deb .device/setup.sh .gpu-b/
du -sh .gpu-a .gpu-b
