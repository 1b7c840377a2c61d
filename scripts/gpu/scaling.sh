#!/bin/bash
# Issue 8: tensor parallelism over the host's GPUs, one rank per GPU where there are enough of them.
# For each model (brown-llama-a, and the TinyLlama-1.1B shape from `gen-checkpoint`) and each tp of
# SCALE_TPS (default "1 2 4"), float16, tprun's default kernels (--kernels auto: WGSL on a GPU):
#   - build the engine; `tprun -n TP --gpus LIST` puts rank r on GPU (r mod GPUs), so tp 4 on two GPUs
#     runs two ranks per GPU (said in the table);
#   - greedy tokens and last-prompt logits of brown-llama-a's four reference prompts (24 new tokens),
#     against tp 1 and, for brown-llama-a, against transformers;
#   - perplexity on data/brown-heldout.txt (the TinyLlama shape scores brown's token ids: random weights,
#     so only its agreement across tp means anything); meanwhile nvidia-smi is read in a loop: each GPU's
#     memory above its idle level (weights, KV cache, Dawn's own), and which GPU each rank's process is
#     listed on (--query-compute-apps), checked against the rank's binding;
#   - then, in SCALE_ROUNDS rounds (default 3) over every model and tp in turn, so that drift of the machine
#     falls on all alike: `bench generate` (prompt SCALE_PROMPT, SCALE_NEW new tokens, 3 reps; nothing
#     polled meanwhile): prefill and decode tokens/s, a decode forward's share in the host all-reduce and
#     from the partial sums reaching the host to their sum queued back (the GPU idle then). tp over WebGPU
#     varies from call to call on the GPU machine (up to 2× at tp 2), hence the rounds; the table gives
#     their median and range.
# Then the table (scripts/gpu/scaling-table.mjs): speed-up and scaling efficiency against tp 1.
# On the GPU machine, in the carried environment (device README; scripts/gpu/adapters.sh header):
#   bash scripts/gpu/adapters.sh exec bash scripts/gpu/scaling.sh
# Locally on lavapipe (no nvidia-smi: every rank on the one Vulkan device, no placement check):
#   SCALE_MODELS=brown SCALE_NEW=8 bash scripts/gpu/scaling.sh
# Results: $OUT/scaling.jsonl, $OUT/scaling.md, $OUT/scaling-logs.tgz.
set -uo pipefail
OUT=$(realpath -m "${OUT:-$PWD/gpu-out}"); mkdir -p "$OUT"; R=$OUT/scaling.jsonl; : > "$R"
W=${TPRUN_GPU_WORK:-/tmp/tprun-gpu}; L=$W/scaling-logs; rm -rf "$L"; mkdir -p "$L"
# Nothing from an earlier run may stand in for this one's: tp 1's answers are the others' reference, and an
# engine left by other code or options would be timed as this one's (SCALE_KEEP_ENGINES=1 keeps engines).
rm -f "$W"/*-generate.jsonl
[ "${SCALE_KEEP_ENGINES:-0}" = 1 ] || rm -rf "$W"/*-f16-tp*
# tprun's ranks share partial sums through the host, not NCCL; the variable is set as the device README asks
# of every multi-GPU job, so nothing started under this script turns NVLink multicast on.
export NCCL_NVLS_ENABLE=0
TPS=${SCALE_TPS:-1 2 4}
MODELS=${SCALE_MODELS:-brown tiny}
NEW=${SCALE_NEW:-128}; PROMPT=${SCALE_PROMPT:-128}; PPL=${SCALE_PPL_TOKENS:-4096}
cli() { node dist/cli.js "$@"; }
ranks() { local tp=$1; shift; cli -n "$tp" --timeout "${SCALE_TIMEOUT:-900}" "${gpus[@]}" -- "$@"; } # a hung rank ends its step, not the script
logs() { tar -C "$L" -czf "$OUT/scaling-logs.tgz" .; }
smi() { command -v nvidia-smi >/dev/null && nvidia-smi "$@" 2>/dev/null; }
G=0; smi -L >/dev/null && G=$(smi --query-gpu=index --format=csv,noheader | wc -l)
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
      if ! cli build --model "$src" --tp "$tp" --dtype float16 --device gpu --max-batch-size 4 --max-seq-len 512 --out "$e" -q >>"$L/build.log" 2>&1; then
        emit "$base" "{\"step\":\"build\",\"error\":$(tail -1 "$L/build.log" | node -e "console.log(JSON.stringify(require('fs').readFileSync(0, 'utf8').trim()))")}"
        logs; continue
      fi
      emit "$base" "{\"step\":\"build\",\"s\":$(awk "BEGIN { print $(date +%s.%N) - $t0 }")}"
    fi

    ranks "$tp" node dist/cli.js generate --engine "$e" $ids --max-new-tokens 24 --ignore-eos --json --logits -q 2>>"$L/$m-tp$tp-generate.log" \
      | grep '^{' > "$W/$m-tp$tp-generate.jsonl"
    node - "$W/$m-tp$tp-generate.jsonl" "$W/$m-tp1-generate.jsonl" "$m" <<'EOF' | while read -r l; do emit "$base" "$l"; done
const fs = require('fs');
const read = (f) => fs.existsSync(f) ? fs.readFileSync(f, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
const [out, one] = [read(process.argv[2]), read(process.argv[3])];
const ref = require('./models/brown-llama-a-reference.json').prompts;
const rel = (a, b) => Math.sqrt(a.reduce((s, x, i) => s + (x - b[i]) ** 2, 0) / b.reduce((s, y) => s + y * y, 0));
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
// tp 1's answers are the reference only where it and this tp answered every prompt.
const whole = one.length === ref.length && out.length === ref.length;
const r = { step: 'greedy', prompts: ref.length, answered: out.length,
  greedy_equal_tp1: whole ? out.filter((o, i) => same(o.new_ids, one[i].new_ids)).length : null,
  max_rel_l2_tp1: whole ? Math.max(...out.map((o, i) => rel(o.last_prompt_logits, one[i].last_prompt_logits))) : null };
if (out.length !== ref.length) r.error = 'not every prompt answered: see the generate log';
if (process.argv[4] === 'brown') Object.assign(r, { greedy_equal_transformers: out.filter((o, i) => same(o.new_ids, ref[i].greedy_new_ids)).length,
  max_rel_l2_transformers: out.length ? Math.max(...out.map((o, i) => rel(o.last_prompt_logits, ref[i].last_logits))) : null });
console.log(JSON.stringify(r));
EOF

    # perplexity, with nvidia-smi read meanwhile; each rank writes its pid first (exec keeps it).
    pids=$W/$m-tp$tp.pids; : > "$pids"; samples=$W/$m-tp$tp.smi; : > "$samples"
    idle=$(smi --query-gpu=index,memory.used --format=csv,noheader,nounits | tr -d ' ')
    PIDS=$pids ranks "$tp" sh -c 'echo "$TPRUN_RANK $$" >> "$PIDS"; exec node dist/cli.js perplexity --engine "$@"' sh "$e" "${tok[@]}" \
      --max-tokens "$PPL" --json -q 2>>"$L/$m-tp$tp-ppl.log" > "$W/$m-tp$tp-ppl.out" &
    bp=$!
    while kill -0 $bp 2>/dev/null; do
      if [ "$G" -gt 0 ]; then
        { echo "mem $(smi --query-gpu=index,memory.used --format=csv,noheader,nounits | tr -d ' ' | paste -sd' ')"
          echo "apps $(smi --query-compute-apps=pid,gpu_bus_id --format=csv,noheader | tr -d ' ' | paste -sd' ')"; } >> "$samples"
      fi
      sleep 0.1
    done
    wait $bp
    IDLE="$idle" node - "$W/$m-tp$tp-ppl.out" "$pids" "$samples" "$gl" "$tp" <<'EOF' | while read -r l; do emit "$base" "$l"; done
const fs = require('fs');
const [pplFile, pidFile, smiFile, gpuList, tp] = process.argv.slice(2);
const line = fs.readFileSync(pplFile, 'utf8').split('\n').filter((l) => l.startsWith('{')).pop();
const d = line ? JSON.parse(line) : null;
const r = { step: 'perplexity', ppl: d?.ppl ?? null, tokens: d?.tokens ?? null, engine_bytes_gpu: (d?.ranks ?? []).map((k) => k.engine_bytes?.gpu ?? null) };
if (!d) r.error = 'no perplexity line: see the ppl log';
// Memory: each GPU's peak while perplexity ran, above its idle level (MiB). Placement: the GPU(s) whose
// process list shows each rank's pid; with the rank's binding (gpuList, nvidia-smi's indices) it must be
// that one GPU.
const pairs = (s) => Object.fromEntries(s.split(/\s+/).filter(Boolean).map((x) => x.split(',')).map(([k, v]) => [k, +v]));
const idle = pairs((process.env.IDLE || '').replace(/\n/g, ' '));
const lines = fs.readFileSync(smiFile, 'utf8').split('\n');
if (Object.keys(idle).length) {
  const mem = lines.filter((l) => l.startsWith('mem '));
  const peak = {};
  for (const l of mem) for (const [k, v] of Object.entries(pairs(l.slice(4)))) peak[k] = Math.max(peak[k] ?? 0, v - (idle[k] ?? 0));
  Object.assign(r, { mib_above_idle_per_gpu: peak, smi_samples: mem.length });
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
  r.processes_listed = Object.keys(seen).map(Number);
  // Every rank must have said its pid; where nvidia-smi lists no process at all (a container's PID
  // namespace, a driver that lists no Vulkan contexts) there is nothing to check, which is not a pass.
  r.placement_ok = ranks.length !== +tp ? false : r.processes_listed.length ? r.placement.every((p) => p.listed_on.length === 1 && p.listed_on[0] === p.bound) : null;
}
console.log(JSON.stringify(r));
EOF
    logs
  done
done

for round in $(seq "${SCALE_ROUNDS:-3}"); do
  for m in $MODELS; do
    for tp in $TPS; do
      e=$W/$m-f16-tp$tp; [ -d "$e" ] || continue
      gl=$(gpus_for "$tp"); gpus=(${gl:+--gpus "$gl"})
      base=$(printf '{"model":"%s","tp":%d,"gpus":"%s","gpu_count":%d,"round":%d}' "$m" "$tp" "${gl:-default}" "$G" "$round")
      echo "== $(date -u +%T) bench round $round $m tp=$tp" | tee -a "$L/steps.log"
      ranks "$tp" node dist/cli.js bench generate --one --engine "$e" --device gpu --prompt-len "$PROMPT" --new-tokens "$NEW" --reps 3 --json \
        2>>"$L/$m-tp$tp-bench.log" | grep '"bench":"generate"' | tail -1 > "$W/$m-tp$tp-bench.json"
      node - "$W/$m-tp$tp-bench.json" <<'EOF' | while read -r l; do emit "$base" "$l"; done
const t = require('fs').readFileSync(process.argv[2], 'utf8').trim();
const b = t ? JSON.parse(t) : null;
const keys = ['prompt_tokens', 'new_tokens', 'prefill_tokens_per_s', 'decode_tokens_per_s', 'decode_ms_per_token', 'decode_forwards', 'decode_forward_ms',
  'allreduce_ms_per_decode_forward', 'allreduce_share_of_decode_forward', 'host_ms_per_decode_forward', 'host_share_of_decode_forward', 'kernels', 'ratio_to_bound'];
console.log(JSON.stringify({ step: 'bench', ...(b ? Object.fromEntries(keys.map((k) => [k, b[k] ?? null])) : { error: 'no bench line: see the bench log' }) }));
EOF
      logs
    done
  done
done
node scripts/gpu/scaling-table.mjs "$R" | tee "$OUT/scaling.md"
logs
