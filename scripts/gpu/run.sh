#!/bin/bash
# The GPU run of issue 6, in one call on the GPU machine (from the project root, after `npx tsc -p .`
# and `bash ../shared/device/pack.sh` here; carry [".device", "dist"]):
#   source .device/setup.sh && bash scripts/gpu/run.sh [SECTION...]
# Sections (default: all, in this order): bandwidth make-model transformers (Python only) and
# adapters overhead quality brown tiny tiny-int4 tiny-tp2 (Node). Results accumulate in $OUT/results.jsonl, so the
# sections may also run over several calls (the tiny model is kept in $TPRUN_GPU_WORK).
# Logs and results.jsonl go to $OUT (default ./gpu-out); the table is printed at the end.
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"; R=$OUT/results.jsonl
W=${TPRUN_GPU_WORK:-/tmp/tprun-gpu}; mkdir -p "$W"
PY=${PYTHON:-python3}
sections=${*:-bandwidth make-model transformers adapters overhead quality brown tiny tiny-int4 tiny-tp2}
R0=${RESULTS_IN:-}; [ -n "$R0" ] && [ -f "$R0" ] && cp "$R0" "$R"
has() { [[ " $sections " == *" $1 "* ]]; }
step() { echo "== $1 ($(date -u +%T))" | tee -a "$OUT/steps.log"; }
tprun() { node dist/cli.js "$@"; }
bench() { # ENGINE LABEL: tprun's decode/prefill on the GPU, JSON with a label
  tprun bench generate --one --engine "$1" --device gpu --prompt-len 128 --new-tokens 128 --reps 3 --json 2>>"$OUT/$2.log" \
    | grep '^{' | tail -1 | $PY -c "import json,sys; d=json.load(sys.stdin); d['label']='$2'; print(json.dumps(d))" | tee -a "$R"
}
ref() { # MODEL_DIR LABEL: transformers eager float16 on the same GPU
  $PY scripts/gpu/reference.py bench "$1" 128 128 3 2>>"$OUT/$2-transformers.log" | grep '^{' \
    | $PY -c "import json,sys; d=json.load(sys.stdin); d['label']='$2'; print(json.dumps(d))" | tee -a "$R"
}

nvidia-smi --query-gpu=index,name,pci.bus_id,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"
if has bandwidth; then step bandwidth; $PY scripts/gpu/reference.py bandwidth 2>>"$OUT/bandwidth.log" | tee -a "$R"; fi
if has make-model || has transformers; then
  [ -f "$W/tiny11/config.json" ] || { step make-model; $PY scripts/gpu/reference.py make-model "$W/tiny11" 2>>"$OUT/make-model.log" | tee -a "$R"; }
fi
if has transformers; then step transformers
  ref models/brown-llama-a brown-llama-a
  ref "$W/tiny11" tinyllama-1.1b-shape
fi
if has adapters; then step adapters
  node scripts/gpu/adapters.mjs 2>>"$OUT/adapters.log" | tee -a "$R"
  # What the provider opened: Dawn's adapter as ORT logs it at verbose level.
  node --input-type=module -e "
    const ort = (await import('onnxruntime-node')).default;
    const { Graph } = await import('./dist/engine/graph.js'); const { WeightFile } = await import('./dist/engine/weight-file.js');
    const g = new Graph('p', 'float32', new WeightFile('n.bin')); g.node('Identity', [g.input('x', 'float32', [1])], ['y']); g.output('y', 'float32', [1]);
    await ort.InferenceSession.create(g.encode(), { executionProviders: ['webgpu'], logSeverityLevel: 0 });" >"$OUT/webgpu-verbose.log" 2>&1
  grep -iE 'adapter|vendor|architecture|device|backend' "$OUT/webgpu-verbose.log" | head -20
fi
if has overhead; then step overhead
  node scripts/gpu/overhead.mjs 2>>"$OUT/overhead.log" | tee -a "$R"
  TPRUN_WEBGPU_VALIDATION=disabled node scripts/gpu/overhead.mjs --reps 100 2>>"$OUT/overhead.log" | sed 's/"case":"/"case":"(validation off) /' | tee -a "$R"
fi
if has quality; then step quality
  for tp in 1 2; do
    tprun build --model models/brown-llama-a --tp $tp --dtype float16 --device gpu --max-seq-len 512 --out "$W/brown-tp$tp" -q >>"$OUT/build.log" 2>&1
    node scripts/gpu/quality.mjs "$W/brown-tp$tp" "brown-llama-a float16 tp=$tp" gpu 2>>"$OUT/quality.log" | tee -a "$R"
  done
fi
if has brown; then step brown
  [ -d "$W/brown-tp1" ] || tprun build --model models/brown-llama-a --dtype float16 --device gpu --max-seq-len 512 --out "$W/brown-tp1" -q >>"$OUT/build.log" 2>&1
  bench "$W/brown-tp1" brown-llama-a
  [ -d "$W/brown-tp2" ] && bench "$W/brown-tp2" brown-llama-a-tp2
fi
if has tiny || has tiny-int4 || has tiny-tp2; then
  [ -f "$W/tiny11/config.json" ] || { step make-model; $PY scripts/gpu/reference.py make-model "$W/tiny11" 2>>"$OUT/make-model.log" | tee -a "$R"; }
fi
if has tiny; then step tiny
  tprun build --model "$W/tiny11" --dtype float16 --device gpu --max-batch-size 1 --max-seq-len 512 --out "$W/tiny11-tp1" -q >>"$OUT/build-tiny.log" 2>&1
  bench "$W/tiny11-tp1" tinyllama-1.1b-shape
fi
if has tiny-int4; then step tiny-int4  # int4 weight-only: MatMulNBits on WebGPU
  tprun build --model "$W/tiny11" --quant int4_wo --dtype float16 --device gpu --max-batch-size 1 --max-seq-len 512 --out "$W/tiny11-int4" -q >>"$OUT/build-tiny.log" 2>&1
  bench "$W/tiny11-int4" tinyllama-1.1b-shape-int4
fi
if has tiny-tp2; then step tiny-tp2
  tprun build --model "$W/tiny11" --tp 2 --dtype float16 --device gpu --max-batch-size 1 --max-seq-len 512 --out "$W/tiny11-tp2" -q >>"$OUT/build-tiny.log" 2>&1
  bench "$W/tiny11-tp2" tinyllama-1.1b-shape-tp2
fi
step table
$PY scripts/gpu/reference.py table "$R" | tee "$OUT/table.md"
# The device tool brings back only a few files: keep results.jsonl and table.md, pack the logs.
(cd "$OUT" && tar -czf logs.tgz --remove-files $(ls | grep -vE '^(results.jsonl|table.md|logs.tgz)$'))
