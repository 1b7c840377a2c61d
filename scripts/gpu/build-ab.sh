#!/bin/bash
# Issue 14's build and convert rows on the GPU host's idle cores: `bench build` (build --model and convert
# of the TinyLlama-1.1B shape against `cp -r`) with this build's dist/ alternating with a base build's
# (BASE_TGZ: a tarball of another checkout's dist/, default .device/base-dist.tgz), on two cores
# (taskset -c 0,1: the 2-core goal without the shared machine's load) and on all of them, AB_ROUNDS rounds.
# Run through `bash scripts/gpu/adapters.sh exec bash scripts/gpu/build-ab.sh` (node and the production
# node_modules from the adapter packs). Results: $OUT/build-ab.jsonl, one line per bench call with
# {"which": "base"|"this", "cpus": "0,1"|"all", "round": r} added.
set -uo pipefail
root=$(git rev-parse --show-toplevel 2>/dev/null || pwd); cd "$root"
out=${OUT:-/tmp}/build-ab.jsonl
base=/tmp/build-ab-base
mkdir -p "$base" && tar -C "$base" -xzf "${BASE_TGZ:-.device/base-dist.tgz}"
ln -sfn "$root/node_modules" "$base/node_modules"; cp package.json "$base/"
m=/tmp/build-ab-tl
[ -f "$m/config.json" ] || node dist/cli.js gen-checkpoint --preset tinyllama-1.1b --out "$m" >&2
label() { node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{for(const l of s.split('\n')){if(!l.startsWith('{'))continue;const j=JSON.parse(l);Object.assign(j,JSON.parse(process.argv[1]));console.log(JSON.stringify(j));}})" "$1"; }
for round in $(seq 1 "${AB_ROUNDS:-3}"); do
  for cpus in 0,1 all; do
    for b in base this; do
      d=dist; [ "$b" = base ] && d=$base/dist
      pin=(); [ "$cpus" = all ] || pin=(taskset -c "$cpus")
      "${pin[@]}" node "$d/cli.js" bench build --model "$m" --reps 3 --json 2>>"${OUT:-/tmp}/build-ab.log" \
        | label "{\"which\":\"$b\",\"cpus\":\"$cpus\",\"round\":$round,\"load\":\"$(cut -d' ' -f1 /proc/loadavg)\"}" | tee -a "$out"
    done
  done
done
