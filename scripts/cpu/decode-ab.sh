#!/bin/bash
# Issue 14's CPU decode, this branch against its base, each against llama.cpp's CPU build in the same call
# (`bench generate --peer llama.cpp`), on the TinyLlama shape cut to CPU_LAYERS layers as scripts/gpu/run.sh's
# `cpu` section runs it. The base's dist (built from the branch base) lies in $BASE_DIST; it builds the base
# engines and benches them, this tree's dist the new ones. Interleaved: per round, per thread count, per type,
# base and new alternate which goes first. Also the decode profiles (scripts/cpu/decode-profile.mjs) and the
# MatMulNBits microbenchmarks (scripts/cpu/nbits-bench.mjs) at 1 thread. JSON lines to $OUT/results.jsonl.
# Usage: BASE_DIST=DIR bash scripts/cpu/decode-ab.sh, DIR being the base's dist with its package.json one level up
# (git archive BASE | tar -x -C TMP; link node_modules there; npx tsc -p TMP/tsconfig.json); TPRUN_PEERS_DIR where
# node-llama-cpp is installed. Session 9 ran it on the 2-core machine with TPRUN_CPU_WORK=/tmp/d9 and
# CPU_VARIANTS="base new f32".
set -uo pipefail
OUT=${OUT:-$PWD/cpu-out}; mkdir -p "$OUT"; R=$OUT/results.jsonl; L=$OUT/log.txt
W=${TPRUN_CPU_WORK:-/tmp/tprun-cpu}; mkdir -p "$W"
BASE_DIST=${BASE_DIST:-scratch/base/dist}
ROUNDS=${CPU_ROUNDS:-3}; THREADS=${CPU_THREADS:-1 2}; TYPES=${CPU_TYPES:-int4_wo int8_wo}; LAYERS=${CPU_LAYERS:-4}
# Variants: base (the base's dist and engine), new (this tree's), f32 (this tree's, built --dtype float32:
# activations, norms and the KV cache in float32, no Casts around MatMulNBits).
VARIANTS=${CPU_VARIANTS:-base new}
# node-llama-cpp: TPRUN_PEERS_DIR where set, else bench/peers (unpacked from .peers/peers.tar.xz where carried).
if [ -z "${TPRUN_PEERS_DIR:-}" ]; then
  [ -d bench/peers/node_modules ] || { [ -f .peers/peers.tar.xz ] && tar -C bench/peers -xJf .peers/peers.tar.xz; }
  export TPRUN_PEERS_DIR=$PWD/bench/peers
fi
label() { python3 -c "import json,sys
for l in sys.stdin:
    if l.startswith('{'): d=json.loads(l); d['label']='$1'; d['load1']=float(open('/proc/loadavg').read().split()[0]); d.pop('greedy_ids', None); print(json.dumps(d), flush=True)"; }
m=$W/tiny$LAYERS
[ -f "$m/config.json" ] || node dist/cli.js gen-checkpoint --preset tinyllama-1.1b --layers "$LAYERS" --out "$m" >>"$L" 2>&1
for q in $TYPES; do
  t=$( [ "$q" = int8_wo ] && echo q8_0 || echo q4_0 )
  [ -d "$m-$q-base" ] || node "$BASE_DIST/cli.js" build --model "$m" --quant "$q" --dtype float16 --device cpu --max-batch-size 1 --max-seq-len 512 --out "$m-$q-base" -q >>"$L" 2>&1
  [ -d "$m-$q-new" ] || node dist/cli.js build --model "$m" --quant "$q" --dtype float16 --device cpu --max-batch-size 1 --max-seq-len 512 --out "$m-$q-new" -q >>"$L" 2>&1
  [[ " $VARIANTS " != *" f32 "* ]] || [ -d "$m-$q-f32" ] || node dist/cli.js build --model "$m" --quant "$q" --dtype float32 --device cpu --max-batch-size 1 --max-seq-len 512 --out "$m-$q-f32" -q >>"$L" 2>&1
  [ -f "$m-$t.gguf" ] || node --input-type=module -e "const { writeGguf } = await import('./dist/bench/gguf.js'); writeGguf('$m', '$m-$t.gguf', '$t')" >>"$L" 2>&1
  for v in $VARIANTS; do python3 -c "import json; print(json.dumps({'step': 'engine', 'label': '$q $v', 'build_config': json.load(open('$m-$q-$v/config.json'))['build_config']}))" | tee -a "$R"; done
done
if [ -z "${SKIP_PROFILE:-}" ]; then
  for q in $TYPES; do for v in base new; do
    node scripts/cpu/decode-profile.mjs "$m-$q-$v" 32 64 1 2>>"$L" | label "profile $q $v threads 1" | tee -a "$R"
  done; done
  node scripts/cpu/nbits-bench.mjs "lm_i8b32=2048:32000:8:32,lm_i8b256=2048:32000:8:256,lm_i4b32=2048:32000:4:32" 1 15 2 2>>"$L" | label "nbits lm_head threads 1" | tee -a "$R"
  node scripts/cpu/nbits-bench.mjs "fcgate_pair_i4=2048:11264:4:256:-2,fcgate_fused_i4=2048:11264:4:256:2" 1 31 8 2>>"$L" | label "nbits fc+gate threads 1" | tee -a "$R"
  node scripts/cpu/nbits-bench.mjs "fcgate_pair_i8=2048:11264:8:256:-2,fcgate_fused_i8=2048:11264:8:256:2" 1 31 8 2>>"$L" | label "nbits fc+gate threads 1" | tee -a "$R"
  node scripts/cpu/nbits-bench.mjs "fc_i4_f32=2048:5632:4:256:1:4:0,fc_i4_f16=2048:5632:4:256:1:4:1,fc_i8_f32=2048:5632:8:256:1:4:0,fc_i8_f16=2048:5632:8:256:1:4:1" 1 31 8 2>>"$L" | label "nbits float16 activations threads 1" | tee -a "$R"
fi
for round in $(seq "$ROUNDS"); do
  for th in $THREADS; do
    for q in $TYPES; do
      t=$( [ "$q" = int8_wo ] && echo q8_0 || echo q4_0 )
      order=$VARIANTS; [ $(( (round + th) % 2 )) = 1 ] && order=$(echo $VARIANTS | tr ' ' '\n' | tac | tr '\n' ' ')
      for v in $order; do
        d=dist; [ "$v" = base ] && d=$BASE_DIST
        node "$d/cli.js" bench generate --engine "$m-$q-$v" --model "$m" --gguf "$m-$t.gguf" --device cpu --threads "$th" --peer llama.cpp --python /bin/false \
          --prompt-len 64 --new-tokens 32 --reps 3 --json 2>>"$L" | grep -E '"bench":"generate(-peer)?"' | label "cpu $q $v threads $th round $round" | tee -a "$R"
      done
    done
  done
done
