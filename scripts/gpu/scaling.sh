#!/bin/bash
# Issue 8: tensor parallelism over the host's GPUs, one rank per GPU where there are enough of them.
# For each model (brown-llama-a, and the TinyLlama-1.1B shape from `gen-checkpoint`) and each tp of
# SCALE_TPS (default "1 2 4"), float16, tprun's default kernels (--kernels auto: WGSL on a GPU):
#   - build the engine; `tprun -n TP --gpus LIST` puts rank r on GPU (r mod GPUs), so tp 4 on two GPUs
#     runs two ranks per GPU (said in the table);
#   - greedy tokens and last-prompt logits of brown-llama-a's four reference prompts (24 new tokens),
#     against tp 1 and, for brown-llama-a, against transformers;
#   - perplexity on data/brown-heldout.txt (the TinyLlama shape scores brown's token ids: random weights,
#     so only its agreement across tp means anything);
#   - `bench generate` (prompt SCALE_PROMPT, SCALE_NEW new tokens, 3 reps): prefill and decode tokens/s,
#     the share of a decode step in the host all-reduce and off the GPU at all-reduce points; meanwhile
#     nvidia-smi is read every 0.2 s: each GPU's memory above its idle level, and which GPU each rank's
#     process is listed on (nvidia-smi --query-compute-apps), checked against the rank's binding.
# Then the table (scripts/gpu/scaling-table.mjs): speed-up and scaling efficiency against tp 1.
# On the GPU machine, in the carried environment (device README; scripts/gpu/adapters.sh header):
#   bash scripts/gpu/adapters.sh exec bash scripts/gpu/scaling.sh
# Locally on lavapipe (no nvidia-smi: every rank on the one Vulkan device, no placement check):
#   SCALE_MODELS=brown SCALE_NEW=8 bash scripts/gpu/scaling.sh
# Results: $OUT/scaling.jsonl, $OUT/scaling.md, $OUT/scaling-logs.tgz.
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}; mkdir -p "$OUT"; R=$OUT/scaling.jsonl; : > "$R"
W=${TPRUN_GPU_WORK:-/tmp/tprun-gpu}; L=$W/scaling-logs; mkdir -p "$L"
# tprun's ranks share partial sums through the host, not NCCL; the variable is set as the device README asks
# of every multi-GPU job, so nothing started under this script turns NVLink multicast on.
export NCCL_NVLS_ENABLE=0
TPS=${SCALE_TPS:-1 2 4}
MODELS=${SCALE_MODELS:-brown tiny}
NEW=${SCALE_NEW:-128}; PROMPT=${SCALE_PROMPT:-128}; PPL=${SCALE_PPL_TOKENS:-4096}
cli() { node dist/cli.js "$@"; }
logs() { (cd "$L" && tar -czf "$OUT/scaling-logs.tgz" .); }
smi() { command -v nvidia-smi >/dev/null && nvidia-smi "$@" 2>/dev/null; }
G=$(smi --query-gpu=index --format=csv,noheader | wc -l); [ "$G" -gt 0 ] || G=0
gpus_for() { # TP: rank r on GPU r mod G (nvidia-smi's index); "" without nvidia-smi (the default adapter)
  [ "$G" -gt 0 ] || return 0
  local t=$1 r l=; for ((r = 0; r < t; r++)); do l+=${l:+,}$((r % G)); done; echo "$l"
}
emit() { node -e "process.stdout.write(JSON.stringify({ ...JSON.parse(process.argv[1]), ...JSON.parse(process.argv[2] || '{}') }) + '\n')" "$@" | tee -a "$R"; }
smi --query-gpu=index,name,pci.bus_id,memory.total,driver_version --format=csv | tee "$L/nvidia-smi.txt"
ids=$(node -e "console.log(require('./models/brown-llama-a-reference.json').prompts.map((p) => '--input-ids ' + p.input_ids.join(',')).join(' '))")

for m in $MODELS; do
  case $m in
    brown) src=models/brown-llama-a; tok=() ;;
    tiny) src=$W/tiny-gen; tok=(--tokenizer models/brown-llama-a)
      [ -f "$src/config.json" ] || cli gen-checkpoint --preset tinyllama-1.1b --dtype float16 --out "$src" >>"$L/gen.log" 2>&1 ;;
    *) echo "scaling.sh: unknown model '$m' in SCALE_MODELS (brown, tiny)" >&2; exit 2 ;;
  esac
  for tp in $TPS; do
    e=$W/$m-f16-tp$tp; gl=$(gpus_for "$tp"); gpus=(${gl:+--gpus "$gl"})
    base=$(printf '{"model":"%s","tp":%d,"gpus":"%s","gpu_count":%d}' "$m" "$tp" "${gl:-default}" "$G")
    echo "== $(date -u +%T) $m tp=$tp --gpus ${gl:-default}" | tee -a "$L/steps.log"
    if [ ! -d "$e" ]; then
      t0=$(date +%s.%N)
      cli build --model "$src" --tp "$tp" --dtype float16 --device gpu --max-batch-size 4 --max-seq-len 512 --out "$e" -q >>"$L/build.log" 2>&1 \
        || { emit "$base" '{"step":"build","error":"build failed: see build.log"}'; logs; continue; }
      emit "$base" "{\"step\":\"build\",\"s\":$(awk "BEGIN { print $(date +%s.%N) - $t0 }")}"
    fi
    cli -n "$tp" "${gpus[@]}" -- node dist/cli.js generate --engine "$e" $ids --max-new-tokens 24 --ignore-eos --json --logits -q 2>>"$L/$m-tp$tp-generate.log" \
      | grep '^{' > "$W/$m-tp$tp-generate.jsonl"
    node - "$W/$m-tp$tp-generate.jsonl" "$W/$m-tp1-generate.jsonl" "$m" <<'EOF' | while read -r l; do emit "$base" "$l"; done
const fs = require('fs');
const read = (f) => fs.existsSync(f) ? fs.readFileSync(f, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
const [out, one] = [read(process.argv[2]), read(process.argv[3])];
const ref = require('./models/brown-llama-a-reference.json').prompts;
const rel = (a, b) => Math.sqrt(a.reduce((s, x, i) => s + (x - b[i]) ** 2, 0) / b.reduce((s, y) => s + y * y, 0));
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
const r = { step: 'greedy', prompts: ref.length, answered: out.length,
  greedy_equal_tp1: one.length ? out.filter((o, i) => one[i] && same(o.new_ids, one[i].new_ids)).length : null,
  max_rel_l2_tp1: one.length && out.length ? Math.max(...out.map((o, i) => rel(o.last_prompt_logits, one[i].last_prompt_logits))) : null };
if (process.argv[4] === 'brown') Object.assign(r, { greedy_equal_transformers: out.filter((o, i) => same(o.new_ids, ref[i].greedy_new_ids)).length,
  max_rel_l2_transformers: out.length ? Math.max(...out.map((o, i) => rel(o.last_prompt_logits, ref[i].last_logits))) : null });
console.log(JSON.stringify(r));
EOF
    cli -n "$tp" "${gpus[@]}" -- node dist/cli.js perplexity --engine "$e" "${tok[@]}" --max-tokens "$PPL" --json -q 2>>"$L/$m-tp$tp-ppl.log" | grep '^{' | tail -1 \
      | node -e "const d = JSON.parse(require('fs').readFileSync(0, 'utf8') || '{}'); console.log(JSON.stringify({ step: 'perplexity', ppl: d.ppl ?? null, tokens: d.tokens ?? null }))" \
      | while read -r l; do emit "$base" "$l"; done
    # bench generate with nvidia-smi read meanwhile; each rank writes its pid first (exec keeps it).
    pids=$W/$m-tp$tp.pids; : > "$pids"; samples=$W/$m-tp$tp.smi; : > "$samples"
    idle=$(smi --query-gpu=index,memory.used --format=csv,noheader,nounits | tr -d ' ')
    PIDS=$pids cli -n "$tp" "${gpus[@]}" -- sh -c 'echo "$TPRUN_RANK $$" >> "$PIDS"; exec node dist/cli.js bench generate --one --engine "$0" --device gpu --prompt-len "$1" --new-tokens "$2" --reps 3 --json' \
      "$e" "$PROMPT" "$NEW" 2>>"$L/$m-tp$tp-bench.log" > "$W/$m-tp$tp-bench.out" &
    bp=$!
    while kill -0 $bp 2>/dev/null; do
      if [ "$G" -gt 0 ]; then
        { echo "mem $(smi --query-gpu=index,memory.used --format=csv,noheader,nounits | tr -d ' ' | paste -sd' ')"
          echo "apps $(smi --query-compute-apps=pid,gpu_bus_id --format=csv,noheader | tr -d ' ' | paste -sd' ')"; } >> "$samples"
      fi
      sleep 0.2
    done
    wait $bp
    grep '"bench":"generate"' "$W/$m-tp$tp-bench.out" | tail -1 > "$W/$m-tp$tp-bench.json"
    IDLE="$idle" node - "$W/$m-tp$tp-bench.json" "$pids" "$samples" "$gl" <<'EOF' | while read -r l; do emit "$base" "$l"; done
const fs = require('fs');
const [file, pidFile, smiFile, gpuList] = process.argv.slice(2);
const b = fs.readFileSync(file, 'utf8').trim() ? JSON.parse(fs.readFileSync(file, 'utf8')) : null;
const keys = ['prefill_tokens_per_s', 'decode_tokens_per_s', 'decode_ms_per_token', 'decode_forward_ms', 'allreduce_ms_per_decode_forward',
  'allreduce_share_of_decode', 'crossing_ms_per_decode_forward', 'crossing_share_of_decode', 'kernels', 'ratio_to_bound'];
const r = { step: 'bench', ...(b ? Object.fromEntries(keys.map((k) => [k, b[k] ?? null])) : { error: 'no bench line: see the bench log' }) };
// Memory: each GPU's peak over the run above its idle level (MiB). Placement: the GPU(s) whose process list
// shows each rank's pid; with the rank's binding (gpuList, nvidia-smi's indices) it must be that one GPU.
const pairs = (s) => Object.fromEntries(s.split(/\s+/).filter(Boolean).map((x) => x.split(',')).map(([k, v]) => [k, +v]));
const idle = pairs((process.env.IDLE || '').replace(/\n/g, ' '));
const lines = fs.readFileSync(smiFile, 'utf8').split('\n');
if (Object.keys(idle).length) {
  const peak = {};
  for (const l of lines.filter((l) => l.startsWith('mem '))) for (const [k, v] of Object.entries(pairs(l.slice(4)))) peak[k] = Math.max(peak[k] ?? 0, v - (idle[k] ?? 0));
  r.mib_above_idle_per_gpu = peak;
  const bus = require('child_process').execSync('nvidia-smi --query-gpu=index,pci.bus_id --format=csv,noheader', { encoding: 'utf8' })
    .trim().split('\n').map((l) => l.split(',').map((x) => x.trim()));
  const indexOf = Object.fromEntries(bus.map(([i, b]) => [b.toLowerCase(), +i]));
  const seen = {};
  for (const l of lines.filter((l) => l.startsWith('apps '))) for (const x of l.slice(5).split(/\s+/).filter(Boolean)) {
    const [pid, b] = x.split(',');
    (seen[pid] ??= new Set()).add(indexOf[b.toLowerCase()]);
  }
  const want = gpuList.split(',').map(Number);
  const ranks = fs.readFileSync(pidFile, 'utf8').trim().split('\n').filter(Boolean).map((l) => l.split(' ').map(Number));
  r.placement = ranks.sort((a, b) => a[0] - b[0]).map(([rank, pid]) => ({ rank, pid, bound: want[rank], listed_on: seen[pid] ? [...seen[pid]] : [] }));
  // nvidia-smi may list no process at all (a container's PID namespace, or a driver that lists no Vulkan
  // contexts): then there is nothing to check, which is not a pass.
  r.placement_ok = Object.keys(seen).length ? r.placement.every((p) => p.listed_on.length === 1 && p.listed_on[0] === p.bound) : null;
  r.processes_listed = Object.keys(seen).map(Number);
}
console.log(JSON.stringify(r));
EOF
    logs
  done
done
node scripts/gpu/scaling-table.mjs "$R" | tee "$OUT/scaling.md"
logs
