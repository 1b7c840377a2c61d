// GPU time per dispatch kind of --kernels wgsl (timestamp queries, src/engine/wgsl/profile.ts), as one JSON line:
//   node scripts/gpu/wgsl-profile.mjs ENGINE [PROMPT_LEN=128] [NEW_TOKENS=64]
// Runs `tprun generate` once (tp 1: the pipelined greedy decode) with TPRUN_WGSL_PROFILE; the GEMV shape
// knobs (TPRUN_WGSL_GEMV, TPRUN_WGSL_PREFILL, TPRUN_WGSL_SUBGROUPS) pass through from the environment.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [engine, promptLen = '128', newTokens = '64'] = process.argv.slice(2);
if (!engine) { process.stderr.write('usage: wgsl-profile.mjs ENGINE [PROMPT_LEN] [NEW_TOKENS]\n'); process.exit(2); }
const dir = mkdtempSync(join(tmpdir(), 'tprun-wgsl-profile-'));
try {
  const ids = Array.from({ length: Number(promptLen) }, (_, i) => (i * 7919 + 13) % 1000 + 3).join(',');
  execFileSync(process.execPath, ['dist/cli.js', 'generate', '--engine', engine, '--kernels', 'wgsl', '--input-ids', ids,
    '--max-new-tokens', newTokens, '--ignore-eos', '--json'], { env: { ...process.env, TPRUN_WGSL_PROFILE: join(dir, 'profile.json') }, stdio: ['ignore', 'ignore', 'inherit'] });
  for (const f of readdirSync(dir).sort()) {
    const p = JSON.parse(readFileSync(join(dir, f), 'utf8'));
    const knobs = Object.fromEntries(['TPRUN_WGSL_GEMV', 'TPRUN_WGSL_PREFILL', 'TPRUN_WGSL_SUBGROUPS'].filter((k) => process.env[k]).map((k) => [k, process.env[k]]));
    process.stdout.write(JSON.stringify({ step: 'wgsl-profile', file: f, engine, prompt_len: Number(promptLen), new_tokens: Number(newTokens), ...knobs, ...p }) + '\n');
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
