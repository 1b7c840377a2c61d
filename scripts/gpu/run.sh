#!/bin/bash
# The GPU runs of issues 6 and 15, in one call on the GPU machine (from the project root, after `npx tsc -p .`
# and `bash ../shared/device/pack.sh` here; carry [".device", "dist"], or split as pack-split.sh says):
#   source .device/setup.sh && bash scripts/gpu/run.sh [SECTION...]
# Sections (default: all, in this order): bandwidth make-model transformers transformers-tiny (Python only)
# and adapters overhead quality brown tiny profile tiny-int4 profile-int4 tiny-tp2 wgsl (Node), then wgsl-variants, wgsl-decode
# (int4 on WGSL against llama.cpp Q4_0, fused norm / float16 KV against their old forms), wgsl-int4 (the int4 decode GEMV's
# variants, each with its brown-llama-a greedy check), sgmat (the prefill GEMM on subgroup matrices, float16 and int4
# kernels checked and timed), sgmat-int4 (int4 prefill on subgroup matrices in the model) and multi (needs two GPUs:
# --kernels wgsl at pp 2 over two GPUs, one stage each, against tp 2 over the same two and pp 1 on one;
# `tprun -n 2 --gpus 0,1`, a summary line of ratios), attn (a prompt's attention kernels: scripts/gpu/attn-check.mjs,
# then the model with each TPRUN_WGSL_PREFILL_ATTN), ab (sets of TPRUN_WGSL_* knobs side by side in interleaved rounds: AB_F16,
# AB_Q4, AB_ROUNDS), cpu (issue 14: CPU decode against llama.cpp's CPU build on this host's idle cores: CPU_THREADS, CPU_ROUNDS, CPU_LAYERS, CPU_TYPES, CPU_SPIN), tp (tp 2 over WebGPU with the all-reduce overlap on and off: TP_GPUS, TP_ROUNDS) and final (the closing float16 and int4 comparison with llama.cpp,
# defaults only, and their numbers); these eleven are not in the default list. `wgsl` (issue 15
# part 3): tprun's own WGSL kernels (--kernels wgsl) next to ORT's WebGPU provider and llama.cpp Vulkan on the
# TinyLlama shape in one call, plus their greedy tokens / logits on brown-llama-a against transformers. `tiny` and
# `tiny-int4` also time llama.cpp (node-llama-cpp's prebuilt Vulkan build, from bench/peers or the
# .peers/peers.tar.xz packed here) on a GGUF of the same weights (F16; Q4_0 for int4); `profile*` say where a
# decode step's time goes (scripts/gpu/profile.mjs). Results accumulate in $OUT/results.jsonl, so the
# sections may also run over several calls (the tiny model is kept in $TPRUN_GPU_WORK).
# results.jsonl, table.md and logs.tgz go to $OUT (default ./gpu-out); the table is printed at the end.
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"; R=$OUT/results.jsonl
W=${TPRUN_GPU_WORK:-/tmp/tprun-gpu}; mkdir -p "$W"
# The device tool brings back at most 8 files: logs live in $L and are re-packed into $OUT/logs.tgz after
# every step, so results.jsonl, table.md and the logs come back even when a call runs out of time.
L=$W/logs; mkdir -p "$L"
PY=${PYTHON:-python3}
sections=${*:-bandwidth make-model transformers transformers-tiny adapters overhead quality brown tiny profile tiny-int4 profile-int4 tiny-tp2 wgsl}
R0=${RESULTS_IN:-}; [ -n "$R0" ] && [ -f "$R0" ] && cp "$R0" "$R"
has() { [[ " $sections " == *" $1 "* ]]; }
step() { (cd "$L" && tar -czf "$L/logs.tgz" .); echo "== $1 ($(date -u +%T))" | tee -a "$L/steps.log"; }
tprun() { node dist/cli.js "$@"; }
label() { $PY -c "import json,sys
for l in sys.stdin:
    if l.startswith('{'): d=json.loads(l); d['label']='$1'; print(json.dumps(d), flush=True)"; }
# --kernels auto is the default now: the sections that time onnxruntime's WebGPU provider say --kernels ort
# unless their arguments name the kernels.
ortk() { [[ " $* " == *" --kernels "* ]] || echo --kernels ort; }
bench() { # ENGINE LABEL [ARGS...]: tprun's decode/prefill on the GPU, JSON with a label
  tprun bench generate --one --engine "$1" --device gpu --prompt-len 128 --new-tokens 128 --reps 3 --json $(ortk "${@:3}") "${@:3}" 2>>"$L/$2.log" \
    | grep '^{' | tail -1 | label "$2" | tee -a "$R"
}
bench_peer() { # ENGINE MODEL LABEL [ARGS...]: tprun, then llama.cpp (Vulkan) on a GGUF of MODEL, same prompt ids and counts
  [ -d bench/peers/node_modules ] || { [ -f .peers/peers.tar.xz ] && tar -C bench/peers -xJf .peers/peers.tar.xz; }
  tprun bench generate --engine "$1" --model "$2" --device gpu --peer llama.cpp --python /bin/false \
    --prompt-len 128 --new-tokens 128 --reps 3 --json $(ortk "${@:4}") "${@:4}" 2>>"$L/$3.log" | grep -E '"bench":"generate(-peer)?"' \
    | $PY -c "import json,sys
for l in sys.stdin:
    d=json.loads(l); d['label']='$3' + ('-llama.cpp' if d['bench']=='generate-peer' else ''); d.pop('greedy_ids', None); print(json.dumps(d), flush=True)" | tee -a "$R"
}
profile() { # ENGINE LABEL
  OUT=$L node scripts/gpu/profile.mjs "$1" "$2" 32 128 2>>"$L/profile.log" | label "$2" | tee -a "$R"
}
ref() { # MODEL_DIR LABEL: transformers eager float16 on the same GPU
  $PY scripts/gpu/reference.py bench "$1" 128 128 3 2>>"$L/$2-transformers.log" | grep '^{' \
    | $PY -c "import json,sys; d=json.load(sys.stdin); d['label']='$2'; print(json.dumps(d))" | tee -a "$R"
}

nvidia-smi --query-gpu=index,name,pci.bus_id,memory.total,driver_version --format=csv | tee "$L/nvidia-smi.txt"
if has bandwidth; then step bandwidth; $PY scripts/gpu/reference.py bandwidth 2>>"$L/bandwidth.log" | tee -a "$R"
  node --input-type=module -e "const { webgpuCopyBandwidth } = await import('./dist/bench/webgpu-bandwidth.js');
    process.stdout.write(JSON.stringify({ step: 'bandwidth-webgpu', ...(await webgpuCopyBandwidth()) }) + '\\n');" 2>>"$L/bandwidth.log" | tee -a "$R"
fi
if has make-model || has transformers || has transformers-tiny; then
  [ -f "$W/tiny11/config.json" ] || { step make-model; $PY scripts/gpu/reference.py make-model "$W/tiny11" 2>>"$L/make-model.log" | tee -a "$R"; }
fi
if has transformers; then step transformers; ref models/brown-llama-a brown-llama-a; fi
if has transformers || has transformers-tiny; then step transformers-tiny; ref "$W/tiny11" tinyllama-1.1b-shape; fi
if has adapters; then step adapters
  node scripts/gpu/adapters.mjs 2>>"$L/adapters.log" | tee -a "$R"
  # What the provider opened: Dawn's adapter as ORT logs it at verbose level.
  node --input-type=module -e "
    const ort = (await import('onnxruntime-node')).default;
    const { Graph } = await import('./dist/engine/graph.js'); const { WeightFile } = await import('./dist/engine/weight-file.js');
    const g = new Graph('p', 'float32', new WeightFile('n.bin')); g.node('Identity', [g.input('x', 'float32', [1])], ['y']); g.output('y', 'float32', [1]);
    await ort.InferenceSession.create(g.encode(), { executionProviders: ['webgpu'], logSeverityLevel: 0 });" >"$L/webgpu-verbose.log" 2>&1
  grep -iE 'adapter|vendor|architecture|device|backend' "$L/webgpu-verbose.log" | head -20
fi
if has overhead; then step overhead
  node scripts/gpu/overhead.mjs 2>>"$L/overhead.log" | tee -a "$R"
  TPRUN_WEBGPU_VALIDATION=disabled node scripts/gpu/overhead.mjs --reps 100 2>>"$L/overhead.log" | sed 's/"case":"/"case":"(validation off) /' | tee -a "$R"
fi
if has quality; then step quality
  for tp in 1 2; do
    tprun build --model models/brown-llama-a --tp $tp --dtype float16 --device gpu --max-seq-len 512 --out "$W/brown-tp$tp" -q >>"$L/build.log" 2>&1
    node scripts/gpu/quality.mjs "$W/brown-tp$tp" "brown-llama-a float16 tp=$tp" gpu 2>>"$L/quality.log" | tee -a "$R"
  done
fi
if has brown; then step brown
  [ -d "$W/brown-tp1" ] || tprun build --model models/brown-llama-a --dtype float16 --device gpu --max-seq-len 512 --out "$W/brown-tp1" -q >>"$L/build.log" 2>&1
  bench "$W/brown-tp1" brown-llama-a
  [ -d "$W/brown-tp2" ] && bench "$W/brown-tp2" brown-llama-a-tp2
fi
if has tiny || has tiny-int4 || has tiny-tp2 || has profile || has profile-int4; then
  [ -f "$W/tiny11/config.json" ] || { step make-model; $PY scripts/gpu/reference.py make-model "$W/tiny11" 2>>"$L/make-model.log" | tee -a "$R"; }
fi
if has tiny; then step tiny
  tprun build --model "$W/tiny11" --dtype float16 --device gpu --max-batch-size 1 --max-seq-len 512 --out "$W/tiny11-tp1" -q >>"$L/build-tiny.log" 2>&1
  bench_peer "$W/tiny11-tp1" "$W/tiny11" tinyllama-1.1b-shape
fi
if has profile; then step profile
  [ -d "$W/tiny11-tp1" ] || tprun build --model "$W/tiny11" --dtype float16 --device gpu --max-batch-size 1 --max-seq-len 512 --out "$W/tiny11-tp1" -q >>"$L/build-tiny.log" 2>&1
  profile "$W/tiny11-tp1" tinyllama-1.1b-shape
fi
if has tiny-int4; then step tiny-int4  # int4 weight-only: MatMulNBits on WebGPU
  tprun build --model "$W/tiny11" --quant int4_wo --dtype float16 --device gpu --max-batch-size 1 --max-seq-len 512 --out "$W/tiny11-int4" -q >>"$L/build-tiny.log" 2>&1
  bench_peer "$W/tiny11-int4" "$W/tiny11" tinyllama-1.1b-shape-int4
fi
if has profile-int4; then step profile-int4
  [ -d "$W/tiny11-int4" ] && profile "$W/tiny11-int4" tinyllama-1.1b-shape-int4
fi
if has tiny-tp2; then step tiny-tp2
  tprun build --model "$W/tiny11" --tp 2 --dtype float16 --device gpu --max-batch-size 1 --max-seq-len 512 --out "$W/tiny11-tp2" -q >>"$L/build-tiny.log" 2>&1
  bench "$W/tiny11-tp2" tinyllama-1.1b-shape-tp2
fi
if has wgsl; then step wgsl  # tprun's WGSL kernels on Dawn, ORT's WebGPU provider and llama.cpp Vulkan, same engine, one call
  [ -f "$W/tiny11/config.json" ] || { step make-model; $PY scripts/gpu/reference.py make-model "$W/tiny11" 2>>"$L/make-model.log" | tee -a "$R"; }
  [ -d "$W/tiny11-tp1" ] || tprun build --model "$W/tiny11" --dtype float16 --device gpu --max-batch-size 1 --max-seq-len 512 --out "$W/tiny11-tp1" -q >>"$L/build-tiny.log" 2>&1
  bench_peer "$W/tiny11-tp1" "$W/tiny11" tinyllama-1.1b-shape-wgsl --kernels wgsl
  bench "$W/tiny11-tp1" tinyllama-1.1b-shape-ort
  # The same kernels' numbers on a real model: brown-llama-a float16, 4 prompts, 24 greedy tokens, tp 1 and 2.
  for tp in 1 2; do
    [ -d "$W/brown-tp$tp" ] || tprun build --model models/brown-llama-a --tp $tp --dtype float16 --device gpu --max-seq-len 512 --out "$W/brown-tp$tp" -q >>"$L/build.log" 2>&1
    ids=$($PY -c "import json; print(' '.join('--input-ids ' + ','.join(map(str, p['input_ids'])) for p in json.load(open('models/brown-llama-a-reference.json'))['prompts']))")
    tprun generate --engine "$W/brown-tp$tp" --kernels wgsl $ids --max-new-tokens 24 --ignore-eos --json --logits 2>>"$L/wgsl-quality.log" | $PY -c "import json, math, sys
ref = json.load(open('models/brown-llama-a-reference.json'))['prompts']
out = [json.loads(l) for l in sys.stdin if l.startswith('{')]
rel = lambda a, b: math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)) / sum(y * y for y in b))
print(json.dumps({'step': 'wgsl-quality', 'label': 'brown-llama-a float16 tp=$tp --kernels wgsl', 'greedy_equal': sum(o['new_ids'] == p['greedy_new_ids'] for o, p in zip(out, ref)), 'prompts': len(ref),
  'max_rel_l2': max(rel(o['last_prompt_logits'], p['last_logits']) for o, p in zip(out, ref)) if out else None, 'decode_tokens_per_s': out[0]['timings']['tokens_per_s'] if out else None}))" | tee -a "$R"
  done
fi
if has wgsl-variants; then step wgsl-variants  # the WGSL GEMV shapes side by side (src/engine/wgsl/variants.ts), then where GPU time goes
  [ -f "$W/tiny11/config.json" ] || { step make-model; $PY scripts/gpu/reference.py make-model "$W/tiny11" 2>>"$L/make-model.log" | tee -a "$R"; }
  [ -d "$W/tiny11-tp1" ] || tprun build --model "$W/tiny11" --dtype float16 --device gpu --max-batch-size 1 --max-seq-len 512 --out "$W/tiny11-tp1" -q >>"$L/build-tiny.log" 2>&1
  [ -d "$W/brown-tp1" ] || tprun build --model models/brown-llama-a --dtype float16 --device gpu --max-seq-len 512 --out "$W/brown-tp1" -q >>"$L/build.log" 2>&1
  ids=$($PY -c "import json; print(' '.join('--input-ids ' + ','.join(map(str, p['input_ids'])) for p in json.load(open('models/brown-llama-a-reference.json'))['prompts']))")
  wv() { # LABEL ENV...: one bench generate of the TinyLlama shape with the knobs in ENV, then the same knobs' greedy tokens on brown-llama-a
    env "${@:2}" node dist/cli.js bench generate --one --engine "$W/tiny11-tp1" --device gpu --kernels wgsl --prompt-len 128 --new-tokens 128 --reps 1 --json \
      2>>"$L/wgsl-variants.log" | grep '^{' | tail -1 | label "wgsl $1" | tee -a "$R"
    env "${@:2}" node dist/cli.js generate --engine "$W/brown-tp1" --kernels wgsl $ids --max-new-tokens 24 --ignore-eos --json 2>>"$L/wgsl-variants.log" | $PY -c "import json, sys
ref = json.load(open('models/brown-llama-a-reference.json'))['prompts']
out = [json.loads(l) for l in sys.stdin if l.startswith('{')]
print(json.dumps({'step': 'wgsl-variant-quality', 'label': 'wgsl $1 brown-llama-a greedy', 'greedy_equal': sum(o['new_ids'] == p['greedy_new_ids'] for o, p in zip(out, ref)), 'prompts': len(ref)}))" | tee -a "$R"
  }
  wv default
  for g in r2,w128,u1 r2,w128,u2 r4,w128,u1 r4,w256,u2 r4,w64,u4 r8,w128,u1 r8,w128,u2 r2,w256,u4; do wv "decode $g" TPRUN_WGSL_GEMV=$g; done
  wv "default no-subgroups" TPRUN_WGSL_SUBGROUPS=0
  for pf in tiled tm16,r2 tm16,r4 tm8,r4 tm4,r4; do wv "prefill $pf" TPRUN_WGSL_PREFILL=$pf; done
  for g in "" r2,w128,u1; do
    TPRUN_WGSL_GEMV=$g node scripts/gpu/wgsl-profile.mjs "$W/tiny11-tp1" 128 64 2>>"$L/wgsl-profile.log" | label "wgsl-profile ${g:-default}" | tee -a "$R"
  done
fi
if has wgsl-decode; then step wgsl-decode  # int4 on WGSL against llama.cpp Q4_0; fused RMSNorm and the float16 KV cache against their old forms; profiles
  [ -f "$W/tiny11/config.json" ] || { step make-model; $PY scripts/gpu/reference.py make-model "$W/tiny11" 2>>"$L/make-model.log" | tee -a "$R"; }
  [ -d "$W/tiny11-tp1" ] || tprun build --model "$W/tiny11" --dtype float16 --device gpu --max-batch-size 1 --max-seq-len 512 --out "$W/tiny11-tp1" -q >>"$L/build-tiny.log" 2>&1
  [ -d "$W/tiny11-int4" ] || tprun build --model "$W/tiny11" --quant int4_wo --dtype float16 --device gpu --max-batch-size 1 --max-seq-len 512 --out "$W/tiny11-int4" -q >>"$L/build-tiny.log" 2>&1
  bench_peer "$W/tiny11-int4" "$W/tiny11" tinyllama-1.1b-shape-int4-wgsl --kernels wgsl
  bench "$W/tiny11-int4" tinyllama-1.1b-shape-int4-auto --kernels auto
  bench "$W/tiny11-tp1" tinyllama-1.1b-shape-wgsl-fused --kernels wgsl
  TPRUN_WGSL_FUSE_NORM=0 bench "$W/tiny11-tp1" tinyllama-1.1b-shape-wgsl-norm-dispatch --kernels wgsl
  TPRUN_WGSL_KV=float32 bench "$W/tiny11-tp1" tinyllama-1.1b-shape-wgsl-kv-f32 --kernels wgsl
  # A long context (480-token prompt, 32 new): attention's share grows with the positions it reads.
  tprun bench generate --one --engine "$W/tiny11-tp1" --device gpu --kernels wgsl --prompt-len 480 --new-tokens 32 --reps 3 --json 2>>"$L/wgsl-long.log" | grep '^{' | tail -1 | label "tinyllama-1.1b-shape-wgsl-ctx512" | tee -a "$R"
  TPRUN_WGSL_KV=float32 tprun bench generate --one --engine "$W/tiny11-tp1" --device gpu --kernels wgsl --prompt-len 480 --new-tokens 32 --reps 3 --json 2>>"$L/wgsl-long.log" | grep '^{' | tail -1 | label "tinyllama-1.1b-shape-wgsl-ctx512-kv-f32" | tee -a "$R"
  # Attention split over positions (flash-decoding; default one range per 64 cache positions, at most 8) against none.
  for sp in 1 4 16; do
    TPRUN_WGSL_ATTN_SPLIT=$sp tprun bench generate --one --engine "$W/tiny11-tp1" --device gpu --kernels wgsl --prompt-len 480 --new-tokens 32 --reps 3 --json 2>>"$L/wgsl-long.log" | grep '^{' | tail -1 | label "tinyllama-1.1b-shape-wgsl-ctx512-split$sp" | tee -a "$R"
  done
  TPRUN_WGSL_ATTN_SPLIT=1 bench "$W/tiny11-tp1" tinyllama-1.1b-shape-wgsl-nosplit --kernels wgsl
  node scripts/gpu/wgsl-profile.mjs "$W/tiny11-tp1" 128 64 2>>"$L/wgsl-profile.log" | label "wgsl-profile fp16 fused" | tee -a "$R"
  node scripts/gpu/wgsl-profile.mjs "$W/tiny11-int4" 128 64 2>>"$L/wgsl-profile.log" | label "wgsl-profile int4" | tee -a "$R"
  # int4 numerics on a real model: brown-llama-a int4_wo (float kernels on both sides: accuracy level 0),
  # WGSL on the GPU against onnxruntime's CPU engine of the same engine, tp 1 and 2.
  ids=$($PY -c "import json; print(' '.join('--input-ids ' + ','.join(map(str, p['input_ids'])) for p in json.load(open('models/brown-llama-a-reference.json'))['prompts']))")
  for tp in 1 2; do
    e="$W/brown-int4-tp$tp"
    [ -d "$e" ] || tprun build --model models/brown-llama-a --tp $tp --quant int4_wo --dtype float16 --int4-accuracy-level 0 --max-seq-len 512 --out "$e" -q >>"$L/build.log" 2>&1
    tprun generate --engine "$e" --kernels wgsl --device gpu $ids --max-new-tokens 24 --ignore-eos --json --logits >"$L/int4-wgsl-tp$tp.jsonl" 2>>"$L/wgsl-quality.log"
    tprun generate --engine "$e" --device cpu $ids --max-new-tokens 24 --ignore-eos --json --logits >"$L/int4-cpu-tp$tp.jsonl" 2>>"$L/wgsl-quality.log"
    $PY -c "import json, math
g = [json.loads(l) for l in open('$L/int4-wgsl-tp$tp.jsonl') if l.startswith('{')]
c = [json.loads(l) for l in open('$L/int4-cpu-tp$tp.jsonl') if l.startswith('{')]
rel = lambda a, b: math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)) / sum(y * y for y in b))
print(json.dumps({'step': 'wgsl-int4-quality', 'label': 'brown-llama-a int4_wo tp=$tp --kernels wgsl vs CPU engine', 'greedy_equal': sum(a['new_ids'] == b['new_ids'] for a, b in zip(g, c)), 'prompts': len(c),
  'max_rel_l2': max(rel(a['last_prompt_logits'], b['last_prompt_logits']) for a, b in zip(g, c)) if g else None}))" | tee -a "$R"
  done
fi
if has wgsl-int4; then step wgsl-int4  # the int4 decode GEMV's variants (TPRUN_WGSL_GEMV_Q shape x TPRUN_WGSL_Q_UNPACK) side by side, each checked on brown-llama-a int4
  [ -f "$W/tiny11/config.json" ] || { step make-model; $PY scripts/gpu/reference.py make-model "$W/tiny11" 2>>"$L/make-model.log" | tee -a "$R"; }
  [ -d "$W/tiny11-int4" ] || tprun build --model "$W/tiny11" --quant int4_wo --dtype float16 --device gpu --max-batch-size 1 --max-seq-len 512 --out "$W/tiny11-int4" -q >>"$L/build-tiny.log" 2>&1
  e="$W/brown-int4-tp1"
  [ -d "$e" ] || tprun build --model models/brown-llama-a --quant int4_wo --dtype float16 --int4-accuracy-level 0 --max-seq-len 512 --out "$e" -q >>"$L/build.log" 2>&1
  ids=$($PY -c "import json; print(' '.join('--input-ids ' + ','.join(map(str, p['input_ids'])) for p in json.load(open('models/brown-llama-a-reference.json'))['prompts']))")
  tprun generate --engine "$e" --kernels wgsl --device gpu $ids --max-new-tokens 24 --ignore-eos --json --logits >"$L/int4v-default.jsonl" 2>>"$L/wgsl-int4.log"
  # exp,r4,w64,u1 is the default; cvt,r2,w128,u2 the kernel before (376 tok/s on 2026-11-29).
  for v in exp,r4,w64,u1 cvt,r4,w64,u1 cvt,r2,w128,u2 exp,r2,w128,u2 exp,r8,w64,u1 exp,r4,w32,u2 exp,r2,w64,u1; do
    un=${v%%,*}; sh=${v#*,}
    TPRUN_WGSL_Q_UNPACK=$un TPRUN_WGSL_GEMV_Q=$sh tprun bench generate --one --engine "$W/tiny11-int4" --device gpu --kernels wgsl --prompt-len 128 --new-tokens 128 --reps 2 --json \
      2>>"$L/wgsl-int4.log" | grep '^{' | tail -1 | label "wgsl-int4 $v" | tee -a "$R"
    TPRUN_WGSL_Q_UNPACK=$un TPRUN_WGSL_GEMV_Q=$sh tprun generate --engine "$e" --kernels wgsl --device gpu $ids --max-new-tokens 24 --ignore-eos --json --logits 2>>"$L/wgsl-int4.log" | $PY -c "import json, math, sys
d = [json.loads(l) for l in open('$L/int4v-default.jsonl') if l.startswith('{')]
out = [json.loads(l) for l in sys.stdin if l.startswith('{')]
rel = lambda a, b: math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)) / sum(y * y for y in b))
print(json.dumps({'step': 'wgsl-int4-variant-quality', 'label': 'brown-llama-a int4_wo --kernels wgsl $v vs default', 'greedy_equal': sum(o['new_ids'] == b['new_ids'] for o, b in zip(out, d)), 'prompts': len(d),
  'max_rel_l2': max(rel(o['last_prompt_logits'], b['last_prompt_logits']) for o, b in zip(out, d)) if out else None}))" | tee -a "$R"
  done
  node scripts/gpu/wgsl-profile.mjs "$W/tiny11-int4" 128 64 2>>"$L/wgsl-profile.log" | label "wgsl-profile int4 (default variant)" | tee -a "$R"
fi
if has sgmat; then step sgmat  # issue 15 prefill: the GEMM on Dawn's subgroup matrices (tensor cores) against the tiled FMA one
  # 1. Every prefill kernel against a float64 reference (bit-exact on small-integer inputs) and timed side by side.
  #    sgmat-ws*: x and W staged through workgroup memory (kernels/gemm.ts sgmatWsShader), tiles T tokens x N rows,
  #    K k per slice, S subgroups, Z split-K workgroups (the add linears o / down only; the others run as without -z),
  #    -b2 two staging buffers (one barrier per slice); t128-n128 with 4 subgroups is 4x4 result tiles per subgroup;
  #    int4 (q4-*) shapes run the same kernel dequantizing as it stages (two values per f16 op; @cvt: f32 per value),
  #    tiled-n32 there is the FMA tiled int4 GEMM.
  #    Left out as losers on the H200 (session 4): tiled, tiled-t16*, sgmat, sgmat2*, sgmat-n32, sgmat-ws-n32, -t64-n32, -k32.
  node scripts/gpu/sgmat-check.mjs tiled-n32 sgmat-ws sgmat-ws-k128 sgmat-ws-t64-n32-s8 sgmat-ws-t64-n64-k32-s8 \
    sgmat-ws-z2 sgmat-ws-z4 sgmat-ws-k128-z2 sgmat-ws-t64-n64-k32-s8-z2 sgmat-ws-t64-n64-k32 sgmat-ws-t64-n128-k32-z4 \
    sgmat-ws-t64-n128-k32-s8-z4 sgmat-ws-t128-n128-k32-s8-z4 sgmat-ws-t128-n128-k32-z8 sgmat-ws-k32-b2 sgmat-ws-t64-n64-k32-s8-b2 sgmat-ws-t64-n64-k32-s8-z2-b2 \
    sgmat-ws@cvt sgmat-ws-t64-n64-k32-s8@cvt 2>>"$L/sgmat.log" | tee "$L/sgmat-check.jsonl" | tee -a "$R"
  # Per linear, the fastest knob among those with every exact check passed; per epilogue the fastest sgmat-ws tile
  # (store: qkv, add: o + down, swiglu: gate_up) as a TPRUN_WGSL_PREFILL_WS value, float16 and int4 (what auto's table,
  # variants.ts AUTO_WS, should say); and the fastest single sgmat-ws tile over the four float16 linears.
  $PY -c "import json, collections
rs = [json.loads(l) for l in open('$L/sgmat-check.jsonl') if l.startswith('{')]
bad = {r['knob'] for r in rs if r.get('mismatches')}
ok = [r for r in rs if r.get('ms') and r['knob'] not in bad and 'edge' not in r['shape']]
per = {}
for r in ok:
    if r['shape'] not in per or r['ms'] < per[r['shape']]['ms']: per[r['shape']] = r
print(json.dumps({'step': 'sgmat-best-per-linear', **{s: {'knob': r['knob'], 'ms': r['ms'], 'tflops': r['tflops']} for s, r in per.items()}}))
def ws(prefix):
    tot = {ep: collections.defaultdict(float) for ep in ('store', 'add', 'swiglu')}
    for r in ok:
        if r['knob'].startswith('sgmat-ws') and '@' not in r['knob'] and r['shape'].startswith(prefix) and ('-' in r['shape']) == (prefix != ''): tot[r['epilogue']][r['knob']] += r['ms']
    return ','.join(f'{\"q.\" if prefix else \"\"}{ep}={min(t, key=t.get)}' for ep, t in tot.items() if t)
single = collections.defaultdict(float)
for r in ok:
    if r['knob'].startswith('sgmat-ws') and '@' not in r['knob'] and r['fmt'] == 'f16': single[r['knob']] += r['ms']
best = {'best': min(single, key=single.get) if single else '', 'ws_f16': ws(''), 'ws_q4': ws('q4-')}
print(json.dumps({'step': 'sgmat-ws-best', **best}))
open('$L/sgmat-best.env', 'w').write(''.join(f'{k}={v}\\n' for k, v in best.items()))" | tee -a "$R"
  best=$(sed -n 's/^best=//p' "$L/sgmat-best.env" 2>/dev/null); ws_f16=$(sed -n 's/^ws_f16=//p' "$L/sgmat-best.env" 2>/dev/null)
  [ -f "$W/tiny11/config.json" ] || { step make-model; $PY scripts/gpu/reference.py make-model "$W/tiny11" 2>>"$L/make-model.log" | tee -a "$R"; }
  [ -d "$W/tiny11-tp1" ] || tprun build --model "$W/tiny11" --dtype float16 --device gpu --max-batch-size 1 --max-seq-len 512 --out "$W/tiny11-tp1" -q >>"$L/build-tiny.log" 2>&1
  [ -d "$W/brown-tp1" ] || tprun build --model models/brown-llama-a --dtype float16 --device gpu --max-seq-len 512 --out "$W/brown-tp1" -q >>"$L/build.log" 2>&1
  ids=$($PY -c "import json; print(' '.join('--input-ids ' + ','.join(map(str, p['input_ids'])) for p in json.load(open('models/brown-llama-a-reference.json'))['prompts']))")
  # ws:...: auto with the per-epilogue tiles above (TPRUN_WGSL_PREFILL_WS).
  for pf in tiled-n32 $( [ -n "$best" ] && [ "$best" != sgmat-ws ] && echo "$best" ) sgmat-ws $( [ -n "$ws_f16" ] && echo "ws:$ws_f16" ); do
    case $pf in ws:*) export TPRUN_WGSL_PREFILL_WS=${pf#ws:}; pfk=auto;; *) unset TPRUN_WGSL_PREFILL_WS; pfk=$pf;; esac
    # 2. The whole model with it: brown-llama-a's greedy tokens and logits against transformers (a wrong kernel shows here)...
    TPRUN_WGSL_PREFILL=$pfk tprun generate --engine "$W/brown-tp1" --kernels wgsl $ids --max-new-tokens 24 --ignore-eos --json --logits 2>>"$L/sgmat.log" | $PY -c "import json, math, sys
ref = json.load(open('models/brown-llama-a-reference.json'))['prompts']
out = [json.loads(l) for l in sys.stdin if l.startswith('{')]
rel = lambda a, b: math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)) / sum(y * y for y in b))
print(json.dumps({'step': 'wgsl-quality', 'label': 'brown-llama-a float16 tp=1 --kernels wgsl prefill $pf', 'greedy_equal': sum(o['new_ids'] == p['greedy_new_ids'] for o, p in zip(out, ref)), 'prompts': len(ref),
  'max_rel_l2': max(rel(o['last_prompt_logits'], p['last_logits']) for o, p in zip(out, ref)) if out else None}))" | tee -a "$R"
    # ...and 3. its prefill speed on the TinyLlama shape, then where prefill GPU time goes.
    TPRUN_WGSL_PREFILL=$pfk tprun bench generate --one --engine "$W/tiny11-tp1" --device gpu --kernels wgsl --prompt-len 128 --new-tokens 32 --reps 3 --json \
      2>>"$L/sgmat.log" | grep '^{' | tail -1 | label "wgsl prefill $pf" | tee -a "$R"
    TPRUN_WGSL_PREFILL=$pfk node scripts/gpu/wgsl-profile.mjs "$W/tiny11-tp1" 128 8 2>>"$L/wgsl-profile.log" | label "wgsl-profile prefill $pf" | tee -a "$R"
  done
  unset TPRUN_WGSL_PREFILL_WS
fi
if has sgmat-int4; then step sgmat-int4  # int4 prefill on subgroup matrices (sgmat-ws dequantizing as it stages) against the FMA tiled int4 GEMM
  [ -f "$W/tiny11/config.json" ] || { step make-model; $PY scripts/gpu/reference.py make-model "$W/tiny11" 2>>"$L/make-model.log" | tee -a "$R"; }
  [ -d "$W/tiny11-int4" ] || tprun build --model "$W/tiny11" --quant int4_wo --dtype float16 --device gpu --max-batch-size 1 --max-seq-len 512 --out "$W/tiny11-int4" -q >>"$L/build-tiny.log" 2>&1
  e="$W/brown-int4-tp1"
  [ -d "$e" ] || tprun build --model models/brown-llama-a --quant int4_wo --dtype float16 --int4-accuracy-level 0 --max-seq-len 512 --out "$e" -q >>"$L/build.log" 2>&1
  ids=$($PY -c "import json; print(' '.join('--input-ids ' + ','.join(map(str, p['input_ids'])) for p in json.load(open('models/brown-llama-a-reference.json'))['prompts']))")
  tprun generate --engine "$e" --device cpu $ids --max-new-tokens 24 --ignore-eos --json --logits >"$L/int4-cpu-tp1.jsonl" 2>>"$L/sgmat-int4.log"
  # SGMAT_INT4_KNOBS: extra TPRUN_WGSL_PREFILL tiles to run the int4 model with (e.g. sgmat-check's best q4 ones).
  # ws: auto with sgmat-check's per-epilogue int4 picks (run.sh sgmat, same $TPRUN_GPU_WORK), where there are some.
  ws_q4=$(sed -n 's/^ws_q4=//p' "$L/sgmat-best.env" 2>/dev/null)
  for v in tiled default $( [ -n "$ws_q4" ] && echo "ws:$ws_q4" ) ${SGMAT_INT4_KNOBS:-}; do
    case $v in tiled) env="TPRUN_WGSL_PREFILL_Q=tiled";; default) env="";; ws:*) env="TPRUN_WGSL_PREFILL_WS=${v#ws:}";; *) env="TPRUN_WGSL_PREFILL=$v";; esac
    # brown-llama-a int4_wo: greedy tokens and logits against onnxruntime's CPU engine of the same engine...
    env $env node dist/cli.js generate --engine "$e" --kernels wgsl --device gpu $ids --max-new-tokens 24 --ignore-eos --json --logits 2>>"$L/sgmat-int4.log" | $PY -c "import json, math, sys
c = [json.loads(l) for l in open('$L/int4-cpu-tp1.jsonl') if l.startswith('{')]
g = [json.loads(l) for l in sys.stdin if l.startswith('{')]
rel = lambda a, b: math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)) / sum(y * y for y in b))
print(json.dumps({'step': 'wgsl-int4-prefill-quality', 'label': 'brown-llama-a int4_wo --kernels wgsl prefill $v vs CPU engine', 'greedy_equal': sum(a['new_ids'] == b['new_ids'] for a, b in zip(g, c)), 'prompts': len(c),
  'max_rel_l2': max(rel(a['last_prompt_logits'], b['last_prompt_logits']) for a, b in zip(g, c)) if g else None}))" | tee -a "$R"
    # ...and the TinyLlama-shape int4 prefill speed, then where its GPU time goes.
    env $env node dist/cli.js bench generate --one --engine "$W/tiny11-int4" --device gpu --kernels wgsl --prompt-len 128 --new-tokens 32 --reps 3 --json \
      2>>"$L/sgmat-int4.log" | grep '^{' | tail -1 | label "wgsl int4 prefill $v" | tee -a "$R"
    env $env node scripts/gpu/wgsl-profile.mjs "$W/tiny11-int4" 128 8 2>>"$L/wgsl-profile.log" | label "wgsl-profile int4 prefill $v" | tee -a "$R"
  done
fi
if has attn; then step attn  # issue 15: a prompt's attention per KV head group (kernels/attention-group.ts) against the block and per-query kernels
  # 1. The kernels side by side on random data: checked against float64, timed (TinyLlama 128 / 512 tokens, a second turn, heads 128 and 80).
  node scripts/gpu/attn-check.mjs 2>>"$L/attn.log" | tee "$L/attn-check.jsonl" | tee -a "$R"
  [ -f "$W/tiny11/config.json" ] || { step make-model; $PY scripts/gpu/reference.py make-model "$W/tiny11" 2>>"$L/make-model.log" | tee -a "$R"; }
  [ -d "$W/tiny11-tp1" ] || tprun build --model "$W/tiny11" --dtype float16 --device gpu --max-batch-size 1 --max-seq-len 512 --out "$W/tiny11-tp1" -q >>"$L/build-tiny.log" 2>&1
  [ -d "$W/brown-tp1" ] || tprun build --model models/brown-llama-a --dtype float16 --device gpu --max-seq-len 512 --out "$W/brown-tp1" -q >>"$L/build.log" 2>&1
  ids=$($PY -c "import json; print(' '.join('--input-ids ' + ','.join(map(str, p['input_ids'])) for p in json.load(open('models/brown-llama-a-reference.json'))['prompts']))")
  # TPRUN_WGSL_PREFILL_ATTN: empty = the default (group); block = the kernel before; query = the decode kernel per query.
  for a in '' block query; do
    k=${a:-group}
    # 2. The whole model with it: brown-llama-a's greedy tokens and logits against transformers...
    TPRUN_WGSL_PREFILL_ATTN=$a tprun generate --engine "$W/brown-tp1" --kernels wgsl $ids --max-new-tokens 24 --ignore-eos --json --logits 2>>"$L/attn.log" | $PY -c "import json, math, sys
ref = json.load(open('models/brown-llama-a-reference.json'))['prompts']
out = [json.loads(l) for l in sys.stdin if l.startswith('{')]
rel = lambda a, b: math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)) / sum(y * y for y in b))
print(json.dumps({'step': 'wgsl-quality', 'label': 'brown-llama-a float16 tp=1 --kernels wgsl prefill attention $k', 'greedy_equal': sum(o['new_ids'] == p['greedy_new_ids'] for o, p in zip(out, ref)), 'prompts': len(ref),
  'max_rel_l2': max(rel(o['last_prompt_logits'], p['last_logits']) for o, p in zip(out, ref)) if out else None}))" | tee -a "$R"
    # ...3. prefill speed on the TinyLlama shape at 128 and 448 tokens, and 4. where the 128-token prefill's GPU time goes.
    for n in 128 448; do
      TPRUN_WGSL_PREFILL_ATTN=$a tprun bench generate --one --engine "$W/tiny11-tp1" --device gpu --kernels wgsl --prompt-len $n --new-tokens 32 --reps 3 --json \
        2>>"$L/attn.log" | grep '^{' | tail -1 | label "wgsl prefill attention $k $n" | tee -a "$R"
    done
    TPRUN_WGSL_PREFILL_ATTN=$a node scripts/gpu/wgsl-profile.mjs "$W/tiny11-tp1" 128 8 2>>"$L/wgsl-profile.log" | label "wgsl-profile prefill attention $k" | tee -a "$R"
  done
fi
if has variants; then step variants  # the provider options onnxruntime-node passes on, on the fp16 decode profile
  for o in '{"uniformBufferCacheMode":"bucket"}' '{"validationMode":"disabled"}'; do
    TPRUN_WEBGPU_EP_OPTIONS=$o profile "$W/tiny11-tp1" "tinyllama-1.1b-shape $o"
  done
fi
if has multi; then step multi  # issue 15: WGSL kernels over two GPUs, pp 2 (one stage per GPU) against tp 2 and pp 1 on one GPU
  [ -f "$W/tiny11/config.json" ] || { step make-model; $PY scripts/gpu/reference.py make-model "$W/tiny11" 2>>"$L/make-model.log" | tee -a "$R"; }
  [ -d "$W/tiny11-tp1" ] || tprun build --model "$W/tiny11" --dtype float16 --device gpu --max-batch-size 1 --max-seq-len 512 --out "$W/tiny11-tp1" -q >>"$L/build-tiny.log" 2>&1
  [ -d "$W/tiny11-tp2" ] || tprun build --model "$W/tiny11" --tp 2 --dtype float16 --device gpu --max-batch-size 1 --max-seq-len 512 --out "$W/tiny11-tp2" -q >>"$L/build-tiny.log" 2>&1
  [ -d "$W/tiny11-pp2" ] || tprun build --model "$W/tiny11" --pp 2 --dtype float16 --device gpu --max-batch-size 1 --max-seq-len 512 --out "$W/tiny11-pp2" -q >>"$L/build-tiny.log" 2>&1
  # The launcher starts the ranks and binds rank i to the i-th id of --gpus (Mesa's device-select layer):
  # 0,1 puts a stage (or a tp shard) on each GPU; 0,0 both ranks on GPU 0, the hand-off without a second GPU.
  bench_on() { # GPUS ENGINE LABEL: bench generate --kernels wgsl on one rank per id of GPUS, JSON with a label
    local n; n=$(tr ',' '\n' <<<"$1" | wc -l)
    tprun -n "$n" --gpus "$1" -- node dist/cli.js bench generate --one --engine "$2" --device gpu --kernels wgsl \
      --prompt-len 128 --new-tokens 128 --reps 3 --json 2>>"$L/$3.log" | grep '^{' | tail -1 | label "$3" | tee -a "$R"
  }
  # Quality first: brown-llama-a float16 at pp 2, one stage per GPU, 4 prompts x 24 greedy tokens against transformers.
  [ -d "$W/brown-pp2" ] || tprun build --model models/brown-llama-a --pp 2 --dtype float16 --device gpu --max-seq-len 512 --out "$W/brown-pp2" -q >>"$L/build.log" 2>&1
  ids=$($PY -c "import json; print(' '.join('--input-ids ' + ','.join(map(str, p['input_ids'])) for p in json.load(open('models/brown-llama-a-reference.json'))['prompts']))")
  tprun -n 2 --gpus 0,1 -- node dist/cli.js generate --engine "$W/brown-pp2" --kernels wgsl $ids --max-new-tokens 24 --ignore-eos --json --logits 2>>"$L/multi-quality.log" | $PY -c "import json, math, sys
ref = json.load(open('models/brown-llama-a-reference.json'))['prompts']
out = [json.loads(l) for l in sys.stdin if l.startswith('{')]
rel = lambda a, b: math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)) / sum(y * y for y in b))
print(json.dumps({'step': 'multi-quality', 'label': 'brown-llama-a float16 pp=2 on GPUs 0,1 --kernels wgsl', 'greedy_equal': sum(o['new_ids'] == p['greedy_new_ids'] for o, p in zip(out, ref)), 'prompts': len(ref),
  'max_rel_l2': max(rel(o['last_prompt_logits'], p['last_logits']) for o, p in zip(out, ref)) if out else None, 'kernels': [r['kernels'] for r in out[0]['ranks']] if out else None}))" | tee -a "$R"
  bench_on 0 "$W/tiny11-tp1" multi-wgsl-pp1-1gpu
  bench_on 0,1 "$W/tiny11-pp2" multi-wgsl-pp2-2gpu
  bench_on 0,1 "$W/tiny11-tp2" multi-wgsl-tp2-2gpu
  bench_on 0,0 "$W/tiny11-pp2" multi-wgsl-pp2-1gpu
  $PY - "$AB" <<'PYEOF' | tee -a "$R"
import json, sys
rows = {r['label']: r for r in map(json.loads, open(sys.argv[1])) if r.get('label', '').startswith('multi-wgsl-')}
def ratio(a, b, k):  # a's speed over b's: b's time per unit over a's
    ra, rb = rows.get(a), rows.get(b)
    return round(rb[k] / ra[k], 3) if ra and rb and ra.get(k) and rb.get(k) else None
pf = lambda a, b: (lambda ra, rb: round(ra['prefill_tokens_per_s'] / rb['prefill_tokens_per_s'], 3) if ra and rb and ra.get('prefill_tokens_per_s') and rb.get('prefill_tokens_per_s') else None)(rows.get(a), rows.get(b))
print(json.dumps({'summary': 'multi', 'label': 'multi-summary',
  'decode_pp2_2gpu_vs_pp1': ratio('multi-wgsl-pp2-2gpu', 'multi-wgsl-pp1-1gpu', 'decode_ms_per_token'),
  'decode_pp2_2gpu_vs_tp2_2gpu': ratio('multi-wgsl-pp2-2gpu', 'multi-wgsl-tp2-2gpu', 'decode_ms_per_token'),
  'decode_pp2_2gpu_vs_pp2_1gpu': ratio('multi-wgsl-pp2-2gpu', 'multi-wgsl-pp2-1gpu', 'decode_ms_per_token'),
  'prefill_pp2_2gpu_vs_pp1': pf('multi-wgsl-pp2-2gpu', 'multi-wgsl-pp1-1gpu'),
  'prefill_pp2_2gpu_vs_tp2_2gpu': pf('multi-wgsl-pp2-2gpu', 'multi-wgsl-tp2-2gpu')}))
PYEOF
fi
if has ab; then step ab  # knobs side by side: each set of TPRUN_WGSL_* settings in AB_F16 / AB_Q4 on the TinyLlama shape, rounds interleaved, medians and ratios to the first set
  [ -f "$W/tiny11/config.json" ] || { step make-model; $PY scripts/gpu/reference.py make-model "$W/tiny11" 2>>"$L/make-model.log" | tee -a "$R"; }
  [ -d "$W/tiny11-tp1" ] || tprun build --model "$W/tiny11" --dtype float16 --device gpu --max-batch-size 1 --max-seq-len 512 --out "$W/tiny11-tp1" -q >>"$L/build-tiny.log" 2>&1
  [ -d "$W/tiny11-int4" ] || tprun build --model "$W/tiny11" --quant int4_wo --dtype float16 --device gpu --max-batch-size 1 --max-seq-len 512 --out "$W/tiny11-int4" -q >>"$L/build-tiny.log" 2>&1
  # Sets are ';'-separated, each 'LABEL ENV=VALUE...' (LABEL alone: the defaults).
  IFS=';' read -ra f16sets <<<"${AB_F16:-default;submit0 TPRUN_WGSL_SUBMIT=0}"
  IFS=';' read -ra q4sets <<<"${AB_Q4:-default;submit0 TPRUN_WGSL_SUBMIT=0}"
  AB=$L/ab-this-call.jsonl; : > "$AB" # the summary covers this call's rows only ($R accumulates over calls)
  for round in $(seq "${AB_ROUNDS:-3}"); do
    for e in f16 int4; do
      if [ $e = f16 ]; then sets=("${f16sets[@]}"); eng="$W/tiny11-tp1"; else sets=("${q4sets[@]}"); eng="$W/tiny11-int4"; fi
      for set in "${sets[@]}"; do
        read -ra parts <<<"$set"
        env "${parts[@]:1}" node dist/cli.js bench generate --one --engine "$eng" --device gpu --prompt-len 128 --new-tokens 32 --reps 3 --json 2>>"$L/ab.log" \
          | grep '^{' | tail -1 | label "ab $e ${parts[0]} round $round" \
          | $PY -c "import json, sys; [print(json.dumps({**json.loads(l), 'ab_env': sys.argv[1]}), flush=True) for l in sys.stdin]" "${parts[*]:1}" | tee -a "$R" >>"$AB"
      done
    done
  done
  $PY - "$AB" <<'PYEOF' | tee -a "$R"
import json, re, statistics, sys
rows = [r for r in map(json.loads, open(sys.argv[1])) if r.get('label', '').startswith('ab ')]
by = {}
for r in rows:
    m = re.match(r'ab (\S+) (\S+) round', r['label'])
    by.setdefault((m[1], m[2]), []).append(r)
for e in ('f16', 'int4'):
    keys = [k for k in by if k[0] == e]
    if not keys: continue
    med = {k[1]: (statistics.median(x['prefill_tokens_per_s'] for x in by[k]), statistics.median(x['decode_tokens_per_s'] for x in by[k])) for k in keys}
    first = keys[0][1]
    env = {k[1]: by[k][0].get('ab_env', '') for k in keys}
    print(json.dumps({'summary': 'ab', 'label': f'ab-summary {e}', **{s: {'env': env[s], 'runs': len(by[(e, s)]), 'prefill_tok_s': round(p, 1), 'decode_tok_s': round(d, 1), 'prefill_vs_' + first: round(p / med[first][0], 3)} for s, (p, d) in med.items()}}))
PYEOF
fi
if has tp; then step tp  # tp 2 over WebGPU: one rank per GPU of TP_GPUS (default 0,1), the next segment recorded while an all-reduce's sums cross the host, against waiting first (TPRUN_WGSL_REDUCE_AHEAD=0); interleaved rounds
  [ -f "$W/tiny11/config.json" ] || { step make-model; $PY scripts/gpu/reference.py make-model "$W/tiny11" 2>>"$L/make-model.log" | tee -a "$R"; }
  [ -d "$W/tiny11-tp2" ] || tprun build --model "$W/tiny11" --tp 2 --dtype float16 --device gpu --max-batch-size 1 --max-seq-len 512 --out "$W/tiny11-tp2" -q >>"$L/build-tiny.log" 2>&1
  for round in $(seq "${TP_ROUNDS:-2}"); do
    for ahead in 1 0; do
      TPRUN_WGSL_REDUCE_AHEAD=$ahead tprun -n 2 --gpus "${TP_GPUS:-0,1}" -- node dist/cli.js bench generate --one --engine "$W/tiny11-tp2" --device gpu --kernels wgsl \
        --prompt-len 128 --new-tokens 32 --reps 2 --json 2>>"$L/tp.log" | grep '^{' | tail -1 | label "tp2 gpus ${TP_GPUS:-0,1} reduce-ahead $ahead round $round" | tee -a "$R"
    done
  done
fi
if has cpu; then step cpu  # issue 14's CPU decode on this host's idle cores: onnxruntime CPU engines against llama.cpp's CPU build (same GGUF types as bench generate --peer writes), CPU_THREADS (default "1 4") × CPU_ROUNDS interleaved rounds; TinyLlama shape cut to CPU_LAYERS (default 4) layers, as the 2-core figures are
  m="$W/tiny-cpu${CPU_LAYERS:-4}"
  [ -f "$m/config.json" ] || tprun gen-checkpoint --preset tinyllama-1.1b --layers "${CPU_LAYERS:-4}" --out "$m" >>"$L/cpu.log" 2>&1
  for q in int8_wo int4_wo float16; do
    e="$m-$q"; qa=(); [ "$q" = float16 ] || qa=(--quant "$q")
    [ -d "$e" ] || tprun build --model "$m" "${qa[@]}" --dtype float16 --device cpu --max-batch-size 1 --max-seq-len 512 --out "$e" -q >>"$L/cpu.log" 2>&1
    t=$( [ "$q" = int8_wo ] && echo q8_0 || { [ "$q" = int4_wo ] && echo q4_0 || echo f16; } )
    [ -f "$m-$t.gguf" ] || node --input-type=module -e "const { writeGguf } = await import('./dist/bench/gguf.js'); writeGguf('$m', '$m-$t.gguf', '$t')" >>"$L/cpu.log" 2>&1
  done
  for round in $(seq "${CPU_ROUNDS:-2}"); do
    for th in ${CPU_THREADS:-1 4}; do
      for q in ${CPU_TYPES:-int8_wo int4_wo float16}; do
        t=$( [ "$q" = int8_wo ] && echo q8_0 || { [ "$q" = int4_wo ] && echo q4_0 || echo f16; } )
        for sp in ${CPU_SPIN:-0}; do  # onnxruntime's intra-op threads spinning between parallel sections (TPRUN_ORT_SPIN)
          TPRUN_ORT_SPIN=$sp tprun bench generate --engine "$m-$q" --model "$m" --gguf "$m-$t.gguf" --device cpu --threads "$th" --peer llama.cpp --python /bin/false \
            --prompt-len 64 --new-tokens 32 --reps 3 --json 2>>"$L/cpu.log" | grep -E '"bench":"generate(-peer)?"' | label "cpu $q threads $th spin $sp round $round" | tee -a "$R"
        done
      done
    done
  done
fi
if has final; then step final  # issue 15's closing comparison, one call: float16 and int4 against llama.cpp Vulkan with every default on, then their numbers
  [ -f "$W/tiny11/config.json" ] || { step make-model; $PY scripts/gpu/reference.py make-model "$W/tiny11" 2>>"$L/make-model.log" | tee -a "$R"; }
  [ -d "$W/tiny11-tp1" ] || tprun build --model "$W/tiny11" --dtype float16 --device gpu --max-batch-size 1 --max-seq-len 512 --out "$W/tiny11-tp1" -q >>"$L/build-tiny.log" 2>&1
  [ -d "$W/tiny11-int4" ] || tprun build --model "$W/tiny11" --quant int4_wo --dtype float16 --device gpu --max-batch-size 1 --max-seq-len 512 --out "$W/tiny11-int4" -q >>"$L/build-tiny.log" 2>&1
  bench_peer "$W/tiny11-tp1" "$W/tiny11" final-float16 --kernels auto
  bench_peer "$W/tiny11-int4" "$W/tiny11" final-int4 --kernels auto
  node scripts/gpu/wgsl-profile.mjs "$W/tiny11-tp1" 128 8 2>>"$L/wgsl-profile.log" | label "final-profile float16" | tee -a "$R"
  node scripts/gpu/wgsl-profile.mjs "$W/tiny11-int4" 128 8 2>>"$L/wgsl-profile.log" | label "final-profile int4" | tee -a "$R"
  ids=$($PY -c "import json; print(' '.join('--input-ids ' + ','.join(map(str, p['input_ids'])) for p in json.load(open('models/brown-llama-a-reference.json'))['prompts']))")
  for tp in 1 2; do  # brown-llama-a float16 against transformers, defaults (the launcher puts the ranks on the host's GPUs)
    [ -d "$W/brown-tp$tp" ] || tprun build --model models/brown-llama-a --tp $tp --dtype float16 --device gpu --max-seq-len 512 --out "$W/brown-tp$tp" -q >>"$L/build.log" 2>&1
    tprun generate --engine "$W/brown-tp$tp" $ids --max-new-tokens 24 --ignore-eos --json --logits 2>>"$L/final-quality.log" | $PY -c "import json, math, sys
ref = json.load(open('models/brown-llama-a-reference.json'))['prompts']
out = [json.loads(l) for l in sys.stdin if l.startswith('{')]
rel = lambda a, b: math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)) / sum(y * y for y in b))
print(json.dumps({'step': 'final-quality', 'label': 'brown-llama-a float16 tp=$tp defaults', 'greedy_equal': sum(o['new_ids'] == p['greedy_new_ids'] for o, p in zip(out, ref)), 'prompts': len(ref),
  'max_rel_l2': max(rel(o['last_prompt_logits'], p['last_logits']) for o, p in zip(out, ref)) if out else None, 'kernels': [r.get('kernels') for r in out[0].get('ranks', [])] if out else None}))" | tee -a "$R"
  done
  e="$W/brown-int4-tp1"
  [ -d "$e" ] || tprun build --model models/brown-llama-a --quant int4_wo --dtype float16 --int4-accuracy-level 0 --max-seq-len 512 --out "$e" -q >>"$L/build.log" 2>&1
  tprun generate --engine "$e" --device gpu $ids --max-new-tokens 24 --ignore-eos --json --logits >"$L/final-int4-gpu.jsonl" 2>>"$L/final-quality.log"
  tprun generate --engine "$e" --device cpu $ids --max-new-tokens 24 --ignore-eos --json --logits >"$L/final-int4-cpu.jsonl" 2>>"$L/final-quality.log"
  $PY -c "import json, math
g = [json.loads(l) for l in open('$L/final-int4-gpu.jsonl') if l.startswith('{')]
c = [json.loads(l) for l in open('$L/final-int4-cpu.jsonl') if l.startswith('{')]
rel = lambda a, b: math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)) / sum(y * y for y in b))
print(json.dumps({'step': 'final-quality', 'label': 'brown-llama-a int4_wo tp=1 defaults, GPU vs CPU engine', 'greedy_equal': sum(a['new_ids'] == b['new_ids'] for a, b in zip(g, c)), 'prompts': len(c),
  'max_rel_l2': max(rel(a['last_prompt_logits'], b['last_prompt_logits']) for a, b in zip(g, c)) if g else None}))" | tee -a "$R"
fi
step table
$PY scripts/gpu/reference.py table "$R" | tee "$OUT/table.md"
(cd "$L" && tar -czf "$OUT/logs.tgz" .)
