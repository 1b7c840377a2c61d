#!/bin/bash
# Pipeline parallelism on the GPU machine (issue 12), in one call (from the project root, after
# `npx tsc -p .` and `bash ../shared/device/pack.sh` here; carry [".device", "dist"]):
#   source .device/setup.sh && bash scripts/gpu/pp.sh
# Builds the TinyLlama-1.1B shape (`tprun gen-checkpoint --preset tinyllama-1.1b`, synthetic weights) as
# float16 WebGPU engines at tp 1 × pp 1 and tp 1 × pp 2 (two ranks, on one GPU where there is one), then
# `bench generate` on each: batch-1 decode, and 4 prompts in one generate call (micro-batched through the
# pipeline at pp 2: 2 micro-batches of 2 by default, and 4 of 1; one batch at pp 1) against the same 4
# prompts one after another.
# JSON lines go to $OUT/pp-results.jsonl (default OUT=./gpu-out); the last line is the summary:
#   decode_pp2_vs_pp1  (issue goal ≥ 0.8: tp1×pp2 decodes at ≥ 0.8× the tp1 speed, batch 1)
#   pipelined_vs_sequential_pp2  (> 1: 4 prompts in flight beat running them one after another)
# Optional: PP_SECTIONS="brown-cpu" also runs the embedded brown-llama-a on the CPU at tp2 vs pp2.
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"; R=$OUT/pp-results.jsonl; : >"$R"
W=${TPRUN_GPU_WORK:-/tmp/tprun-gpu}; mkdir -p "$W"
PY=${PYTHON:-python3}
NEW=${PP_NEW_TOKENS:-128}
step() { echo "== $1 ($(date -u +%T))" | tee -a "$OUT/pp-steps.log"; }
tprun() { node dist/cli.js "$@"; }
bench() { # ENGINE LABEL DEVICE [EXTRA...]
  local e=$1 l=$2 d=$3; shift 3
  tprun bench generate --one --engine "$e" --device "$d" --prompt-len 128 --new-tokens "$NEW" --reps 3 --prompts 4 --json "$@" 2>>"$OUT/pp-$l.log" \
    | grep '^{' | tail -1 | $PY -c "import json,sys; d=json.load(sys.stdin); d['label']='$l'; print(json.dumps(d))" | tee -a "$R"
}

nvidia-smi --query-gpu=index,name,memory.total --format=csv 2>/dev/null | tee "$OUT/pp-nvidia-smi.txt"
step gen-checkpoint
[ -f "$W/tinyllama-gen/config.json" ] || tprun gen-checkpoint --preset tinyllama-1.1b --dtype float16 --out "$W/tinyllama-gen" >>"$OUT/pp-build.log" 2>&1
for pp in 1 2; do
  step "build tp1 x pp$pp"
  [ -f "$W/tiny-pp$pp/config.json" ] || tprun build --model "$W/tinyllama-gen" --pp $pp --dtype float16 --device gpu \
    --max-batch-size 4 --max-seq-len 512 --out "$W/tiny-pp$pp" -q >>"$OUT/pp-build.log" 2>&1 || echo "build pp$pp failed (see pp-build.log)"
  step "bench tp1 x pp$pp"
  bench "$W/tiny-pp$pp" "tinyllama-1.1b-shape-tp1-pp$pp" gpu
done
step "bench tp1 x pp2, 4 micro-batches of one prompt"
bench "$W/tiny-pp2" "tinyllama-1.1b-shape-tp1-pp2-mb4" gpu --micro-batches 4
if [[ " ${PP_SECTIONS:-} " == *" brown-cpu "* ]]; then
  for l in "2 1" "1 2"; do set -- $l
    step "brown cpu tp$1 x pp$2"
    tprun build --model models/brown-llama-a --tp $1 --pp $2 --max-batch-size 4 --max-seq-len 512 --out "$W/brown-tp$1-pp$2" -q >>"$OUT/pp-build.log" 2>&1
    bench "$W/brown-tp$1-pp$2" "brown-llama-a-cpu-tp$1-pp$2" cpu
  done
fi
step summary
$PY - "$R" <<'PYEOF' | tee -a "$R"
import json, sys
rows = {r['label']: r for r in map(json.loads, open(sys.argv[1])) if 'label' in r}
a, b = rows.get('tinyllama-1.1b-shape-tp1-pp1'), rows.get('tinyllama-1.1b-shape-tp1-pp2')
s = {'summary': 'pp', 'decode_pp2_vs_pp1': None, 'pipelined_vs_sequential_pp2': None, 'batched_vs_sequential_pp1': None}
if a and b: s['decode_pp2_vs_pp1'] = round(a['decode_ms_per_token'] / b['decode_ms_per_token'], 3)
if b: s['pipelined_vs_sequential_pp2'] = b.get('together_speedup')
c = rows.get('tinyllama-1.1b-shape-tp1-pp2-mb4')
if c: s['pipelined_vs_sequential_pp2_mb4'] = c.get('together_speedup')
if a: s['batched_vs_sequential_pp1'] = a.get('together_speedup')
print(json.dumps(s))
PYEOF
