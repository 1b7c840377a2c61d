// The shared-memory allReduce (src/rank/shm-allreduce.ts) with real ranks: results against a sequential
// reference for several dtypes, ops and lengths (around the pipeline step, not divisible by the rank
// count, one element, 64 MiB), through each memory plane; and ranks that disagree fail naming why.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { availableParallelism } from 'node:os';
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { spawnRanks } from './helpers/spawn-ranks.js';
import { CLI } from './helpers/procs.js';

const APP = fileURLToPath(new URL('./helpers/shm-allreduce-app.js', import.meta.url));
const NO_KOFFI = fileURLToPath(new URL('./helpers/no-koffi.cjs', import.meta.url));
// A small step, so that ordinary lengths take many pipelined steps and both area parities.
const SMALL_STEP = { TPRUN_SHM_AR_STEP: '65536' };
let koffi = true;
try { await import('koffi'); } catch { koffi = false; }

for (const [n, env, plane] of /** @type {[number, Record<string, string>, string][]} */ ([
  [2, { ...SMALL_STEP, TPRUN_SHM_MMAP: '0' }, 'pread'],
  [3, { ...SMALL_STEP, TPRUN_SHM_MMAP: '0' }, 'pread'],
  [2, { TPRUN_SHM_MMAP: '0' }, 'pread'],
  [3, { ...SMALL_STEP, TPRUN_SHM_WASM: '0' }, 'mmap'],
  [2, SMALL_STEP, 'wasm'],
  [3, SMALL_STEP, 'wasm'],
  [2, {}, 'wasm'],
])) {
  test(`allReduce through shared memory agrees with the reference: ${n} ranks, ${plane}${env.TPRUN_SHM_AR_STEP ? ', 64 KiB steps' : ''}`,
    { skip: plane !== 'pread' && !koffi && 'koffi (optional) is not installed' }, async () => {
      const res = await spawnRanks(n, [APP, 'check'], { env, timeoutMs: 240000 });
      for (const r of res) {
        assert.equal(r.code, 0, `rank ${r.rank}: ${r.stderr}`);
        assert.deepEqual(JSON.parse(r.stdout), { rank: r.rank, ok: true, plane });
      }
    });
}

// Where koffi is not installed (hidden from the ranks' require, src/util/libc.ts's only way to it), the
// default takes the pure-JavaScript plane.
test('allReduce without koffi: the default falls back to the pread plane and agrees with the reference', async () => {
  const env = { ...SMALL_STEP, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --require ${NO_KOFFI}` };
  const res = await spawnRanks(2, [APP, 'check'], { env, timeoutMs: 240000 });
  for (const r of res) {
    assert.equal(r.code, 0, `rank ${r.rank}: ${r.stderr}`);
    assert.deepEqual(JSON.parse(r.stdout), { rank: r.rank, ok: true, plane: 'pread' });
  }
});

// By default, where every rank has a core, the areas are set up when the world starts, as Open MPI's shared
// memory is in MPI_Init, so that the first call costs what any other does (issue #14): the plane exists
// before the first call asks for it, and the areas' first exchange ran in initWorld (ShmAllReduce.warm), so
// the first call is not the first run of its code. Where ranks outnumber cores, and with TPRUN_SHM_EARLY=0,
// they are set up at the first call instead (TPRUN_SHM_EARLY=1 sets them up early there too). Either way the whole
// area is allocated then, but only the pages that short calls use are populated (shortSpans); a pipelined
// call after a short one checks the rest. The default rows fail if the early set-up silently stops happening.
for (const [n, env, plane] of /** @type {[number, Record<string, string>, string][]} */ ([
  [2, {}, 'wasm'],
  [3, {}, 'wasm'],
  [3, { TPRUN_SHM_EARLY: '1' }, 'wasm'],
  [3, { TPRUN_SHM_EARLY: '0' }, 'wasm'],
  [2, { TPRUN_SHM_WASM: '0' }, 'mmap'],
  [2, { TPRUN_SHM_MMAP: '0' }, 'pread'],
  [2, { TPRUN_SHM_EARLY: '0' }, 'wasm'],
  [2, { TPRUN_SHM_EARLY: '0', TPRUN_SHM_MMAP: '0' }, 'pread'],
])) {
  // Unset, the default is early only where every rank has a core (as the ranks judge it, before binding).
  const early = env.TPRUN_SHM_EARLY === undefined ? n <= availableParallelism() : env.TPRUN_SHM_EARLY === '1';
  const how = Object.entries(env).map(([k, v]) => `${k}=${v}`).join(' ') || `by default, ${n} ranks on ${availableParallelism()} cores`;
  test(`the allReduce areas are set up ${early ? 'when the world starts' : 'at the first call'} (${how}): ${n} ranks, ${plane}`,
    { skip: plane !== 'pread' && !koffi && 'koffi (optional) is not installed' }, async () => {
      const res = await spawnRanks(n, [APP, 'made'], { env, timeoutMs: 60000 });
      for (const r of res) {
        assert.equal(r.code, 0, `rank ${r.rank}: ${r.stderr}`);
        assert.deepEqual(JSON.parse(r.stdout), early
          ? { rank: r.rank, plane, madeBefore: 'early', made: 'early', warmed: true, lazy: true }
          : { rank: r.rank, plane, madeBefore: 'none', made: 'first call', warmed: false, lazy: true });
      }
    });
}

// Where the areas' first exchange runs (every rank set up early), the world's start then makes
// TPRUN_SHM_WARM_CALLS small allReduces through the user's own path (PeerWorld.warmPaths, issue #14: a
// fresh process's first calls met that JavaScript cold). Each rank advertises its count and all make the
// fewest (one rank's 0 turns it off for all: a rank warming alone would wait for collective 0 while its
// peer is in #1). The calls leave no trace a user sees: the first call's result is the rank-order sum to
// the bit, and the user's first collective is #1.
const earlyByDefault = availableParallelism() >= 2;
for (const [what, env, perRank, want] of /** @type {[string, Record<string, string>, Record<string, string> | undefined, number | 'default'][]} */ ([
  ['by default', {}, undefined, 'default'],
  ['TPRUN_SHM_WARM_CALLS=5', { TPRUN_SHM_WARM_CALLS: '5' }, undefined, 5],
  ['TPRUN_SHM_WARM_CALLS=0', { TPRUN_SHM_WARM_CALLS: '0' }, undefined, 0],
  ['TPRUN_SHM_WARM_CALLS=0 on rank 1 only', {}, { TPRUN_SHM_WARM_CALLS: '0' }, 0],
  ['TPRUN_SHM_EARLY=0 (no start-up exchange)', { TPRUN_SHM_EARLY: '0' }, undefined, 0],
])) {
  test(`the world's start warms the user's allReduce path (${what}); the first call is bit-exact and nothing is left in /dev/shm`,
    { skip: (!koffi && 'koffi (optional) is not installed') || (!earlyByDefault && 'needs 2 CPUs (the early set-up)'), timeout: 90_000 }, async () => {
      const res = await spawnRanks(2, [APP, 'warm'], { env: { ...env, APP_TIMEOUT_MS: '60000' }, perRankEnv: (r) => (r === 1 && perRank ? perRank : {}), timeoutMs: 60000 });
      for (const r of res) {
        assert.equal(r.code, 0, `rank ${r.rank}: ${r.signal ?? ''} ${r.stderr}`);
        const out = JSON.parse(r.stdout);
        assert.equal(out.plane, 'wasm');
        assert.equal(out.bitExact, true, `rank ${r.rank}: the first call's sum is not the rank-order sum`);
        if (want === 'default') assert.ok(out.warmCalls >= 16, `rank ${r.rank}: ${out.warmCalls} warm-up calls`);
        else assert.equal(out.warmCalls, want);
        // The areas' first exchange and every warm-up call went through the areas' wasm call, before the program's first call.
        assert.equal(out.wasmCalls, env.TPRUN_SHM_EARLY === '0' ? 0 : out.warmCalls + 1);
        assert.deepEqual(readdirSync('/dev/shm').filter((f) => f.startsWith('tprun-') && f.includes(`-${r.rank}-${r.pid}-`)), []);
      }
    });
}

test('the warm-up leaves the user\'s numbering alone: a disagreement in the first collective names #1',
  { skip: (!koffi && 'koffi (optional) is not installed') || (!earlyByDefault && 'needs 2 CPUs (the early set-up)'), timeout: 90_000 }, async () => {
    const res = await spawnRanks(2, [APP, 'warm-numbering'], { env: { APP_TIMEOUT_MS: '60000' }, timeoutMs: 50000 });
    for (const r of res) assert.notEqual(r.code, 0, `rank ${r.rank} passed`);
    assert.match(res.map((r) => r.stderr).join('\n'), /mismatched collective #1: rank [01] called allReduce\((sum|max), float32\) where rank [01] called allReduce\((sum|max), float32\)/);
  });

test('a TPRUN_SHM_WARM_CALLS that is not a count is refused in one line (exit 2)', { timeout: 90_000 }, async () => {
  const res = await spawnRanks(2, [APP, 'warm'], { env: { TPRUN_SHM_WARM_CALLS: 'lots' }, timeoutMs: 50000 });
  for (const r of res) {
    assert.equal(r.code, 2, `rank ${r.rank}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /^tprun: rank \d: TPRUN_SHM_WARM_CALLS=lots: not a whole number >= 0$/m);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  }
});

// Ranks a launcher bound to one core each (mpirun --bind-to core, srun --cpu-bind=cores, here `taskset -c
// $TPRUN_LOCAL_RANK` under tprun) each have a core: by default they set up early, as unbound ranks do. The
// rule read each rank's own one-CPU mask and judged them oversubscribed (set up at the first call).
test('ranks bound to a core each (taskset -c $TPRUN_LOCAL_RANK) set the areas up when the world starts, by default',
  { skip: (!koffi && 'koffi (optional) is not installed') || (availableParallelism() < 2 && 'needs 2 CPUs')
    || (spawnSync('taskset', ['-c', '0', 'true']).status !== 0 && 'needs taskset (util-linux)'), timeout: 90_000 }, () => {
    const r = spawnSync(process.execPath, [CLI, '-n', '2', '--', 'sh', '-c', 'exec taskset -c $TPRUN_LOCAL_RANK "$0" "$@"', process.execPath, APP, 'made'],
      { encoding: 'utf8', env: { ...process.env, TPRUN_QUIET: '1' }, timeout: 80_000 });
    assert.equal(r.status, 0, r.stderr);
    const got = r.stdout.trim().split('\n').map((l) => JSON.parse(l)).sort((a, b) => a.rank - b.rank);
    assert.deepEqual(got, [0, 1].map((rank) => ({ rank, plane: 'wasm', madeBefore: 'early', made: 'early', warmed: true, lazy: true })));
  });

// The early set-up on some ranks only (TPRUN_SHM_EARLY=0 by mpirun -x on one rank, a per-rank environment): each rank sets its
// areas up when it was told to, and the start-up exchange, which needs every rank, runs only where every
// rank advertised the flag at rendezvous. It used to run on the flagged rank alone, which then waited for
// a collective number 0 that its peers never called, until TPRUN_COMM_TIMEOUT_MS.
test('TPRUN_SHM_EARLY=1 on rank 0, 0 on rank 1: the job completes, rank 0 sets up early, rank 1 at its first call, no start-up exchange',
  { skip: !koffi && 'koffi (optional) is not installed', timeout: 90_000 }, async () => {
    // The world's timeout far above the test's: a hang is killed by the test's guard, not reported as done.
    const res = await spawnRanks(2, [APP, 'made'], { env: { APP_TIMEOUT_MS: '300000' }, perRankEnv: (r) => ({ TPRUN_SHM_EARLY: r === 1 ? '0' : '1' }), timeoutMs: 60000 });
    for (const r of res) assert.equal(r.code, 0, `rank ${r.rank}: ${r.signal ?? ''} ${r.stderr}`);
    assert.deepEqual(res.map((r) => JSON.parse(r.stdout)), [
      { rank: 0, plane: 'wasm', madeBefore: 'early', made: 'early', warmed: false, lazy: true },
      { rank: 1, plane: 'wasm', madeBefore: 'none', made: 'first call', warmed: false, lazy: true },
    ]);
  });

// A short call on mapped areas completes before allReduce returns while its peers keep up (no promise turn;
// issue #14); a peer that comes late past the spin sends the call down the asynchronous path, after which
// calls are synchronous again. The pread plane has no spin: only its results are checked. On the arena's
// plane a short call is one WebAssembly call (src/rank/oneshot-wasm.ts) unless TPRUN_SHM_WASM_ONESHOT=0,
// and both ways must be the way taken.
for (const [n, env, plane] of /** @type {[number, Record<string, string>, string][]} */ ([
  [2, {}, 'wasm'],
  [3, {}, 'wasm'],
  [2, { TPRUN_SHM_WASM_ONESHOT: '0' }, 'wasm'],
  [2, { TPRUN_SHM_WASM: '0' }, 'mmap'],
  [2, { TPRUN_SHM_MMAP: '0' }, 'pread'],
])) {
  const wasmOneShot = plane === 'wasm' && env.TPRUN_SHM_WASM_ONESHOT !== '0';
  test(`short allReduces complete synchronously while peers keep up, and wait for a late one: ${n} ranks, ${plane}${wasmOneShot ? ' (one wasm call)' : ''}`,
    { skip: plane !== 'pread' && !koffi && 'koffi (optional) is not installed' }, async () => {
      const res = await spawnRanks(n, [APP, 'sync'], { env, timeoutMs: 120000 });
      for (const r of res) {
        assert.equal(r.code, 0, `rank ${r.rank}: ${r.stderr}`);
        const out = JSON.parse(r.stdout);
        assert.equal(out.plane, plane);
        assert.equal(out.ok, true);
        if (r.rank === 0) assert.equal(out.late, false, 'rank 0 had the late call\'s result before its peers joined');
        // Every call of the scenario (float32 sum, float64 max, int8 min) has a wasm vector op.
        if (wasmOneShot) assert.ok(out.wasmCalls >= 1000, `rank ${r.rank}: ${out.wasmCalls} calls went through the wasm one-exchange call`);
        else assert.equal(out.wasmCalls, 0, `rank ${r.rank}: the wasm one-exchange call ran where it is off`);
        if (plane === 'pread') continue;
        assert.ok(out.sync > 0, `rank ${r.rank}: none of 500 calls completed synchronously`);
        assert.ok(out.after > 0, `rank ${r.rank}: no call completed synchronously after the late one`);
      }
    });
}

// Asleep in the kernel instead (TPRUN_SHM_FUTEX_US, on by default only where ranks outnumber cores): a rank
// whose peers come 50 ms late sleeps on their doorbell and is woken by their move, so even that call is
// complete when allReduce returns; the other calls are as above.
for (const [n, env, plane] of /** @type {[number, Record<string, string>, string][]} */ ([
  [2, { TPRUN_SHM_FUTEX_US: '20000000' }, 'wasm'],
  [3, { TPRUN_SHM_FUTEX_US: '20000000' }, 'wasm'],
  [2, { TPRUN_SHM_FUTEX_US: '20000000', TPRUN_SHM_WASM: '0' }, 'mmap'],
])) {
  test(`a rank whose peers are late sleeps on a futex until they move: ${n} ranks, ${plane}`,
    { skip: (!koffi && 'koffi (optional) is not installed') || (!['x64', 'arm64'].includes(process.arch) && 'no futex number for this architecture') }, async () => {
      const res = await spawnRanks(n, [APP, 'sync'], { env, timeoutMs: 120000 });
      for (const r of res) {
        assert.equal(r.code, 0, `rank ${r.rank}: ${r.stderr}`);
        const out = JSON.parse(r.stdout);
        assert.equal(out.plane, plane);
        assert.equal(out.late, true, `rank ${r.rank}: the late call came back before its result`);
        assert.ok(out.sync > 0 && out.after > 0);
        // Rank 0 slept through its peers' 50 ms: at least one of its futex sleeps ended by their ring, not
        // by the 1 ms slice that bounds a lost wake-up.
        if (r.rank === 0) assert.ok(out.rung > 0, 'rank 0 was never woken by a peer\'s ring');
      }
    });
}

// Both planes where koffi is installed: the pread one, and the default (the SIMD arena's, calls that fit
// a step in one exchange).
const failPlanes = /** @type {[string, Record<string, string>][]} */ ([['pread', { TPRUN_SHM_MMAP: '0' }], ...(koffi ? [['default', {}]] : [])]);
for (const [planeName, planeEnv] of failPlanes) {
  for (const [scenario, why] of /** @type {[string, RegExp][]} */ ([
    ['mismatch-length', /allReduce #\d+: rank [01] reduces \d+ bytes where rank [01] reduces \d+ \(mismatched lengths\)/],
    ['mismatch-small-length', /allReduce #\d+: rank [01] reduces \d+ bytes where rank [01] reduces \d+ \(mismatched lengths\)|mismatched/],
    ['mismatch-op', /mismatched collective #\d+: rank [01] called allReduce\((sum|max), float32\) where rank [01] called allReduce\((sum|max), float32\)/],
  ])) {
    test(`ranks that disagree (${scenario}, ${planeName} plane) fail at once, saying why`, async () => {
      const res = await spawnRanks(2, [APP, scenario], { env: { ...planeEnv, APP_TIMEOUT_MS: '60000' }, timeoutMs: 50000 });
      for (const r of res) {
        assert.notEqual(r.code, 0, `rank ${r.rank} passed: ${r.stdout}`);
        assert.equal(r.signal, null);
      }
      assert.match(res.map((r) => r.stderr).join('\n'), why);
    });
  }

  test(`a call waiting when its own rank closes the world fails naming the call (${planeName} plane)`, async () => {
    const res = await spawnRanks(2, [APP, 'close-while-waiting'], { env: { ...planeEnv, APP_TIMEOUT_MS: '60000' }, timeoutMs: 50000 });
    for (const r of res) assert.equal(r.code, 0, `rank ${r.rank}: ${r.stderr}`);
    assert.match(JSON.parse(res[0].stdout).call, /^CommError: allReduce #\d+ .*on rank 0: the world was closed while it waited$/);
  });

  test(`a rank that dies between large allReduces takes the others down, naming it (not by their timeout; ${planeName} plane)`, async () => {
    // The ranks' collective timeout (120 s) is beyond this test's hang guard: only the death can end them.
    const res = await spawnRanks(3, [APP, 'die'], { env: { ...planeEnv, APP_TIMEOUT_MS: '120000' }, timeoutMs: 60000 });
    assert.equal(res[1].code, 3);
    for (const r of [res[0], res[2]]) {
      assert.equal(r.signal, null, `rank ${r.rank} was killed by the hang guard`);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /allReduce #\d+ .*failed on rank \d: rank 1 (disconnected|closed its world)/);
    }
  });
}

// TPRUN_SHM_ONE_SHOT_BYTES on some ranks only: the ranks met in different protocols over the same areas and
// returned wrong sums without a word. Each rank advertises its value at rendezvous (ArInfo.oneShot) and every
// rank refuses a difference at the world's start, in one line naming the variable and both ranks' values.
// Without the areas (TPRUN_SHM_AR_STEP=0 on every rank) the knob changes nothing and the job runs.
test('ranks with different TPRUN_SHM_ONE_SHOT_BYTES are refused at the world\'s start, naming both values', { timeout: 90_000 }, async () => {
  const res = await spawnRanks(2, [APP, 'check'], { perRankEnv: (r) => (r === 1 ? { TPRUN_SHM_ONE_SHOT_BYTES: '0' } : {}), timeoutMs: 60000 });
  for (const r of res) {
    // One line and exit 2, as any bad input (src/rank/input-exit.ts), no stack trace.
    assert.equal(r.code, 2, `rank ${r.rank} ran: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /^tprun: rank \d: TPRUN_SHM_ONE_SHOT_BYTES differs between ranks: rank 0 has 32768, rank 1 has 0/m);
    assert.doesNotMatch(r.stderr, /AssertionError|\n\s+at /);
  }
  const off = await spawnRanks(2, [APP, 'check'], { env: { TPRUN_SHM_AR_STEP: '0' }, perRankEnv: (r) => (r === 1 ? { TPRUN_SHM_ONE_SHOT_BYTES: '0' } : {}), timeoutMs: 60000 });
  for (const r of off) assert.equal(r.code, 0, `rank ${r.rank}: ${r.stderr}`);
});
