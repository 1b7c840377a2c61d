#!/bin/bash
# Issue 15 part 2 on the GPU machine: one rank, one GPU, through Mesa's device-select Vulkan layer.
# The single-GPU machine has two Vulkan devices once lavapipe is carried there: the NVIDIA GPU and
# lavapipe (CPU). Rank 0 is bound to one, rank 1 to the other, then the reverse, each checked from inside
# the rank (scripts/gpu/adapters.mjs: the layer's listing of what the rank sees, and a MatMul timing);
# a tp=2 generate runs split over both; a binding to a device the host lacks is refused in one line.
#
# Here (after `npx tsc -p .`):  bash scripts/gpu/adapters.sh pack
#   makes .device/adp1 .device/adp2 ... (git-ignored), at most ~30 MB each: node, production
#   node_modules, the Vulkan loader and vulkaninfo debs, lavapipe + device-select layer with the
#   libraries they need (libLLVM-15, z3, icu, libxml2, ...). The tree (~29 MB) plus everything is over
#   the device tool's 64 MiB, so it travels in back-to-back calls, one part each (the machine stays warm ~30 s):
#   1. carry [".device/adp1"]:          bash scripts/gpu/adapters.sh stash
#   2. carry [".device/adp2"]:          bash scripts/gpu/adapters.sh stash   (and so on)
#   N. carry [".device/adpN", "dist"]:  bash scripts/gpu/adapters.sh run
# The device tool ships the session's own checkout (not a worktree): pack and call from there. The pack
# cache ($ADAPTERS_CACHE, default /tmp/tprun-adapters-pack) is reused; lavapipe's xz -9 takes minutes.
# Results: $OUT/adapters.jsonl (one line per rank and case) and $OUT/adapters.md (the table for docs/gpu.md).
set -uo pipefail
root=$(git rev-parse --show-toplevel 2>/dev/null || pwd); cd "$root"
cache=${ADAPTERS_CACHE:-/tmp/tprun-adapters-pack}
stash=/tmp/tprun-adapters

pack() {
  set -e
  mkdir -p "$cache/debs" .device
  [ -s "$cache/node.xz" ] || xz -T0 -6 -c "$(readlink -f "$(command -v node)")" > "$cache/node.xz"
  if ! ls "$cache"/debs/vulkan-tools_*.deb >/dev/null 2>&1; then
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64-lists'
    mkdir -p /tmp/amd64-lists/partial; apt-get $o update >/dev/null 2>&1 || true
    (cd "$cache/debs" && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 vulkan-tools >/dev/null 2>&1)
  fi
  stamp=$(cat package.json package-lock.json | sha256sum | cut -c1-16)
  if [ ! -s "$cache/deps.tar.xz" ] || [ "$(cat "$cache/deps.stamp" 2>/dev/null)" != "$stamp" ]; then
    t=$(mktemp -d); cp package.json package-lock.json "$t"; [ -f .npmrc ] && cp .npmrc "$t"
    (cd "$t" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund >/dev/null)
    find "$t/node_modules" -type d \( -path '*/darwin*' -o -path '*/win32*' -o -path '*linux/arm64*' -o -path '*linux-arm64*' -o -path '*/musl-*' \) -prune -exec rm -rf {} + 2>/dev/null || true
    z=$t/node_modules/zeromq/build/linux/x64/node
    rm -rf "$z/64" "$z/108" "$z/115" "$z/glibc-147-Release" "$t/node_modules/zod/src" "$t/node_modules/cmake-ts/src" "$t/node_modules/node-addon-api"
    find "$t/node_modules" \( -name '*.d.ts' -o -name '*.d.cts' -o -name '*.d.mts' -o -name '*.map' -o -name '*.md' \) -delete
    tar -C "$t" -cf - node_modules | xz -T0 -6 > "$cache/deps.tar.xz"; rm -rf "$t"; echo "$stamp" > "$cache/deps.stamp"
  fi
  # lavapipe and the layer (Mesa >= 25: .ci/run installs it) with every library they load but glibc's.
  if [ ! -s "$cache/lvp.tar.xz" ]; then
    t=$(mktemp -d); lib=/usr/lib/x86_64-linux-gnu
    for l in $(ldd $lib/libvulkan_lvp.so $lib/libVkLayer_MESA_device_select.so | awk '/=>/{print $3}' | sort -u | grep -vE '/lib(c|m|pthread|dl|rt)\.so'); do cp -L "$l" "$t/"; done
    cp $lib/libvulkan_lvp.so $lib/libVkLayer_MESA_device_select.so "$t/"
    tar -C "$t" -cf - . | xz -T0 -9 > "$cache/lvp.tar.xz"; rm -rf "$t"
  fi
  # The llama.cpp peer (bench/peers, packed as docs/gpu.md says) rides along when it is here.
  [ -s .peers/peers.tar.xz ] && cp .peers/peers.tar.xz "$cache/peers.tar.xz"
  t=$(mktemp -d); tar -C "$cache" -cf "$t/blob.tar" node.xz deps.tar.xz debs lvp.tar.xz $(cd "$cache" && ls lvp-*.tar.xz peers.tar.xz 2>/dev/null)
  # Parts of at most ~30 MB: each call carries one beside the ~30 MB tree (64 MiB in all), the last with dist.
  size=$(stat -c %s "$t/blob.tar"); n=$(( (size + 30000000 - 1) / 30000000 )); part=$(( (size + n - 1) / n ))
  rm -f .device/adp?; split -b "$part" -a 1 --numeric-suffixes=1 "$t/blob.tar" .device/adp; rm -rf "$t"
  ls -la .device/adp?
}

stash_parts() { mkdir -p "$stash"; for f in .device/adp?; do [ -f "$f" ] && cp "$f" "$stash/"; done; ls -la "$stash"; }

setup() {
  local x=$stash/x
  if [ ! -d "$x/lvp" ]; then
    rm -rf "$x"; mkdir -p "$x/lvp/layer"
    cat "$stash"/adp? | tar -C "$x" -xf - || { echo "the parts are not all here: $(ls "$stash")" >&2; exit 1; }
    tar -C "$x/lvp" -xJf "$x/lvp.tar.xz"; for f in "$x"/lvp-*.tar.xz; do [ -f "$f" ] && tar -C "$x/lvp" -xJf "$f"; done
    mkdir -p /tmp/nodebin && xz -dc "$x/node.xz" > /tmp/nodebin/node && chmod +x /tmp/nodebin/node
    for f in "$x"/debs/*.deb; do dpkg -x "$f" /; done; ldconfig
    printf '{"file_format_version":"1.0.0","ICD":{"library_path":"%s/libvulkan_lvp.so","api_version":"1.4.305"}}\n' "$x/lvp" > "$x/lvp/lvp_icd.json"
    printf '{"file_format_version":"1.0.0","layer":{"name":"VK_LAYER_MESA_device_select","type":"GLOBAL","library_path":"%s/libVkLayer_MESA_device_select.so","api_version":"1.4.303","implementation_version":"1","description":"Linux device selection layer","functions":{"vkNegotiateLoaderLayerInterfaceVersion":"vkNegotiateLoaderLayerInterfaceVersion"}}}\n' "$x/lvp" > "$x/lvp/layer/VkLayer_MESA_device_select.json"
  fi
  # node_modules here may be a link to a checkout that is not on this machine
  [ -L node_modules ] && rm -f node_modules
  [ -d node_modules ] || tar -xJf "$x/deps.tar.xz"
  [ -f "$x/peers.tar.xz" ] && [ ! -d bench/peers/node_modules ] && tar -C bench/peers -xJf "$x/peers.tar.xz"
  export PATH=/tmp/nodebin:$PATH
  local nv=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  [ -f $nv ] || nv=$(ls /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json 2>/dev/null | head -1)
  # Both devices: the NVIDIA driver and lavapipe; the layer loaded by name, as where Mesa is not installed.
  export VK_DRIVER_FILES=${nv:+$nv:}$x/lvp/lvp_icd.json
  export VK_LAYER_PATH=$x/lvp/layer VK_INSTANCE_LAYERS=VK_LAYER_MESA_device_select
  export LD_LIBRARY_PATH=$x/lvp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
}

run() {
  setup
  OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"; R=$OUT/adapters.jsonl; : > "$R"
  local log=$OUT/adapters.log
  echo "== $(date -u +%T) devices" | tee -a "$log"
  nvidia-smi --query-gpu=index,name,pci.bus_id --format=csv,noheader | tee -a "$log"
  vulkaninfo --summary 2>>"$log" | grep -E '^GPU|deviceName|deviceType|vendorID|deviceID' | tee -a "$log"
  local gpu; gpu=$(nvidia-smi --query-gpu=pci.bus_id --format=csv,noheader | head -1 | tr -d ' ')
  local lvp=10005:0
  case_() { # NAME GPUS: tprun -n 2 --gpus GPUS over adapters.mjs; vulkaninfo in each rank's environment
    echo "== $(date -u +%T) $1 (--gpus $2)" | tee -a "$log"
    node dist/cli.js -n 2 --gpus "$2" -- sh -c 'echo "rank $TPRUN_RANK vulkaninfo: $(vulkaninfo --summary 2>/dev/null | grep -m1 deviceName | sed "s/.*= //")"' 2>>"$log" | tee -a "$log"
    node dist/cli.js -n 2 --gpus "$2" -- node scripts/gpu/adapters.mjs 2>>"$log" | grep '^{' | sed "s/^{/{\"case\":\"$1\",\"gpus\":\"$2\",/" | tee -a "$R"
  }
  case_ "rank 0 GPU, rank 1 lavapipe" "$gpu,$lvp"
  case_ "reverse" "$lvp,$gpu"
  case_ "by index (0 = nvidia-smi's GPU 0)" "$lvp,0"
  case_ "device this host lacks" "$gpu,0000:99:00.0"
  echo "== $(date -u +%T) tp=2 generate, rank 0 on the GPU, rank 1 on lavapipe" | tee -a "$log"
  local e=/tmp/tprun-adapters-brown-tp2
  [ -d $e ] || node dist/cli.js build --model models/brown-llama-a --tp 2 --dtype float32 --device gpu --max-seq-len 128 --max-input-len 64 --out $e -q >>"$log" 2>&1
  local ids; ids=$(node -e "console.log(require('./models/brown-llama-a-reference.json').prompts[0].input_ids.join(','))")
  node dist/cli.js -n 2 --gpus "$gpu,$lvp" -- node dist/cli.js generate --engine $e --device gpu --kernels ort --input-ids "$ids" --max-new-tokens 24 --ignore-eos --json -q 2>>"$log" \
    | grep '^{' | head -1 | node -e "
      const s = require('fs').readFileSync(0, 'utf8'); const r = s.trim() ? JSON.parse(s) : {}; const ref = require('./models/brown-llama-a-reference.json').prompts[0];
      console.log(JSON.stringify({ check: 'tp2-split', case: 'tp=2 generate, rank 0 GPU + rank 1 lavapipe', greedy_equal: JSON.stringify(r.new_ids) === JSON.stringify(ref.greedy_new_ids), new_ids: r.new_ids ?? null }));" | tee -a "$R"
  node -e "
    const rows = require('fs').readFileSync('$R', 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const t = ['| case | --gpus | rank | bound to (checked in the rank) | the rank sees | MatMul GFLOP/s |', '|---|---|---|---|---|---|'];
    const order = [...new Set(rows.map((r) => r.case))];
    for (const r of rows.filter((r) => r.check === 'adapter').sort((a, b) => order.indexOf(a.case) - order.indexOf(b.case) || a.rank - b.rank)) t.push('| ' + [r.case, r.gpus, r.rank, r.ok ? r.adapter ?? 'default adapter' : 'refused: ' + r.error, (r.visible ?? []).join('; '), r.gflop_per_s ?? ''].join(' | ') + ' |');
    for (const r of rows.filter((r) => r.check === 'tp2-split')) t.push('| ' + r.case + ' | | 0,1 | greedy tokens equal to transformers: ' + r.greedy_equal + ' | | |');
    console.log(t.join('\n'));" | tee "$OUT/adapters.md"
  (cd "$OUT" && tar -czf adapters-logs.tgz adapters.log && rm -f adapters.log)
}

# Two NVIDIA GPUs on one host (the nvidia-h200-x2 machine): rank i on GPU i by default, the reverse by index
# and by PCI bus id, each checked from inside the rank; tp=2 over both GPUs on tprun's WGSL kernels
# (greedy tokens against transformers), then the TinyLlama shape's decode/prefill at tp 2 over two GPUs next
# to tp 1 on one (bench generate, JSON lines in $OUT/multi.jsonl).
multi() {
  setup
  OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"; R=$OUT/adapters.jsonl; : > "$R"; M=$OUT/multi.jsonl; : > "$M"
  local log=$OUT/adapters.log W=${TPRUN_GPU_WORK:-/tmp/tprun-gpu}; mkdir -p "$W"
  echo "== $(date -u +%T) devices" | tee -a "$log"
  nvidia-smi --query-gpu=index,name,pci.bus_id --format=csv,noheader | tee -a "$log"
  vulkaninfo --summary 2>>"$log" | grep -E '^GPU|deviceName|deviceType|vendorID|deviceID' | tee -a "$log"
  local g0 g1; g0=$(nvidia-smi --query-gpu=pci.bus_id --format=csv,noheader | sed -n 1p | tr -d ' '); g1=$(nvidia-smi --query-gpu=pci.bus_id --format=csv,noheader | sed -n 2p | tr -d ' ')
  [ -n "$g1" ] || { echo "one GPU on this host: the two-GPU cases need two" | tee -a "$log"; return 1; }
  # Which physical GPU holds each rank's bytes: rank r fills (r + 1) x 2 GiB and holds it; nvidia-smi's
  # memory.used per GPU, against a baseline, must rise by 2 GiB on rank 0's GPU and 4 GiB on rank 1's.
  mem() { nvidia-smi --query-gpu=pci.bus_id,memory.used --format=csv,noheader,nounits | tr -d ' '; }
  case_() {
    echo "== $(date -u +%T) $1 (--gpus $2)" | tee -a "$log"
    local base; base=$(mem); local f; f=$(mktemp)
    node dist/cli.js -n 2 --gpus "$2" -- node scripts/gpu/adapters.mjs --hold-mib 2048 >"$f" 2>>"$log" &
    local pid=$! i=0
    while [ "$(grep -c '"holding"' "$f")" -lt 2 ] && [ $i -lt 600 ] && kill -0 $pid 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
    local held; held=$(mem); wait $pid
    grep '"check":"adapter"' "$f" | sed "s/^{/{\"case\":\"$1\",\"gpus\":\"$2\",/" | tee -a "$R"
    BASE="$base" HELD="$held" node -e "
      const parse = (s) => Object.fromEntries(s.trim().split('\n').map((l) => l.split(',')).map(([b, m]) => [b, +m]));
      const a = parse(process.env.BASE), b = parse(process.env.HELD);
      console.log(JSON.stringify({ check: 'memory', case: '$1', gpus: '$2', mib_added_per_gpu: Object.fromEntries(Object.keys(b).map((k) => [k, b[k] - a[k]])) }));" | tee -a "$R"
    rm -f "$f"
  }
  case_ "default: rank i on GPU i" auto
  case_ "reverse by index" 1,0
  case_ "by PCI bus id" "$g1,$g0"
  local ids; ids=$(node -e "console.log(require('./models/brown-llama-a-reference.json').prompts.map((p) => '--input-ids ' + p.input_ids.join(',')).join(' '))")
  for tp in 1 2; do
    local e=$W/brown-f16-tp$tp
    [ -d $e ] || node dist/cli.js build --model models/brown-llama-a --tp $tp --dtype float16 --device gpu --max-seq-len 512 --out $e -q >>"$log" 2>&1
    echo "== $(date -u +%T) brown-llama-a float16 tp=$tp --kernels wgsl on $tp GPU(s)" | tee -a "$log"
    node dist/cli.js -n $tp -- node dist/cli.js generate --engine $e --kernels wgsl $ids --max-new-tokens 24 --ignore-eos --json --logits 2>>"$log" \
      | grep '^{' | node -e "
        const ref = require('./models/brown-llama-a-reference.json').prompts;
        const out = require('fs').readFileSync(0, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
        const rel = (a, b) => Math.sqrt(a.reduce((s, x, i) => s + (x - b[i]) ** 2, 0) / b.reduce((s, y) => s + y * y, 0));
        console.log(JSON.stringify({ check: 'multi-quality', label: 'brown-llama-a float16 tp=$tp --kernels wgsl, one GPU per rank', greedy_equal: out.filter((o, i) => JSON.stringify(o.new_ids) === JSON.stringify(ref[i].greedy_new_ids)).length, prompts: ref.length,
          max_rel_l2: out.length ? Math.max(...out.map((o, i) => rel(o.last_prompt_logits, ref[i].last_logits))) : null }));" | tee -a "$M"
  done
  [ -f "$W/tiny11/config.json" ] || python3 scripts/gpu/reference.py make-model "$W/tiny11" >>"$log" 2>&1
  for tp in 1 2; do
    local e=$W/tiny11-f16-tp$tp
    [ -d $e ] || node dist/cli.js build --model "$W/tiny11" --tp $tp --dtype float16 --device gpu --max-batch-size 1 --max-seq-len 512 --out $e -q >>"$log" 2>&1
    for k in wgsl ort; do
      echo "== $(date -u +%T) bench TinyLlama shape tp=$tp --kernels $k" | tee -a "$log"
      node dist/cli.js bench generate --engine $e --device gpu --kernels $k --python /bin/false --prompt-len 128 --new-tokens 128 --reps 3 --json 2>>"$log" \
        | grep '"bench":"generate"' | tail -1 | sed "s/^{/{\"label\":\"tinyllama-1.1b-shape tp=$tp on $tp GPU(s) --kernels $k\",/" | tee -a "$M"
    done
  done
  (cd "$OUT" && tar -czf adapters-logs.tgz adapters.log && rm -f adapters.log)
}

case "${1:-}" in
  pack) pack ;;
  stash) stash_parts ;;
  run) stash_parts; run ;;
  multi) stash_parts >/dev/null; multi ;;
  # Any other GPU script in the same carried environment: bash scripts/gpu/adapters.sh exec bash scripts/gpu/pp.sh
  exec) shift; stash_parts >/dev/null; setup; exec "$@" ;;
  *) echo "usage: bash scripts/gpu/adapters.sh pack|stash|run|multi|exec CMD..." >&2; exit 2 ;;
esac
