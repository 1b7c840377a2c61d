// What a process that learnt a rank's routing id gets from rank 0's rendezvous without the job secret.
// Without --secure the id travels in clear in the ZMTP handshake, and ZMQ_ROUTER_HANDOVER hands the id's
// connection to whoever connects under it: an EXCH sent that way used to fail the job (a malformed one)
// or be taken as the rank's (a well-formed one), and a recorded HELLO + AUTH replayed got the world table
// and the exchange's answer again (the same challenge for the same client nonce). Rank 0 runs in this
// process; "rank 1" speaks the protocol by hand, with the secret where it is the honest rank.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import * as zmq from 'zeromq';
import { pack, unpack } from 'msgpackr';
import { z } from 'zod/v3';
import { rendezvous } from '../dist/rank/rendezvous.js';
import { freePort } from './helpers/spawn-ranks.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const info = (rank) => ({ rank, host: 'h', hostKey: `host-${rank}/x`, pid: 424242 + rank, data: 'tcp://127.0.0.1:9', dataNonce: randomBytes(32) });

async function rank0() {
  const port = await freePort();
  const secret = randomBytes(32);
  const logs = [];
  const ep = `tcp://127.0.0.1:${port}`;
  const r0 = rendezvous({ rank: 0, size: 2, bind: ep, connect: ep, secret, info: info(0), timeoutMs: 20_000, log: (m) => logs.push(m) });
  const mac = (...p) => { const h = createHmac('sha256', secret); for (const x of p) h.update(x).update('\0'); return h.digest(); };
  const dealer = (rid) => {
    const d = new zmq.Dealer({ linger: 0, reconnectInterval: 10 });
    d.plainUsername = rid; d.plainPassword = 'x'; d.routingId = rid;
    d.connect(ep);
    return d;
  };
  return { r0, logs, mac, dealer };
}

const pending = new WeakMap();
/** The next message of type `type` (others skipped), or undefined after `ms`. */
async function expect(d, type, ms = 5000) {
  const end = Date.now() + ms;
  for (;;) {
    const left = end - Date.now();
    if (left <= 0) return undefined;
    // A wait that timed out leaves its receive pending (ZeroMQ allows one at a time): the next one takes it.
    if (!pending.has(d)) pending.set(d, d.receive().finally(() => pending.delete(d)));
    const f = await Promise.race([pending.get(d), sleep(left).then(() => undefined)]);
    if (!f) return undefined;
    if (String(f[0]) === type) return f;
  }
}

/** An honest rank 1's round: HELLO, CHAL, AUTH; its recorded messages. */
async function round(d, mac) {
  const cn = randomBytes(32);
  const hello = ['HELLO', pack({ cn })];
  await d.send(hello);
  const chal = await expect(d, 'CHAL');
  assert.ok(chal, 'no challenge');
  const sn = Buffer.from(unpack(chal[1]).sn);
  const auth = ['AUTH', pack({ size: 2, info: info(1), cp: mac('tprun/client', '1', sn, cn) })];
  await d.send(auth);
  return { cn, sn, hello, auth };
}
const exch = (mac, { sn, cn }, v) => { const body = pack({ v }); return ['EXCH', body, mac('tprun/exch', '1', sn, cn, body)]; };

test('an EXCH under a joined rank\'s routing id without the secret is dropped and logged: the job goes on with the rank\'s own', { timeout: 60_000 }, async () => {
  const { r0, logs, mac, dealer } = await rank0();
  const rid = randomBytes(12).toString('hex');
  const d1 = dealer(rid);
  await round(d1, mac);
  assert.ok(await expect(d1, 'WORLD'), 'no world table');
  const world = await r0;
  const all = world.exchange('zero', z.string());
  /** @type {unknown} */
  let settled = false;
  all.then((v) => { settled = v; }, (e) => { settled = e.message; });
  // The impostor takes the routing id over and sends a malformed exchange, then a well-formed one with a
  // made-up proof, then leaves (else the two connections would take the id from each other for ever).
  const d2 = dealer(rid);
  await sleep(300);
  await d2.send(['EXCH', pack({ v: 'not an array' })]);
  await d2.send(['EXCH', pack({ v: 'fake' }), randomBytes(32)]);
  await sleep(500);
  d2.close();
  assert.equal(settled, false, 'rank 0 settled the exchange on the impostor\'s messages');
  // The honest rank reconnects under its routing id (the connection the impostor took is dead: libzmq's
  // handover ends the pipe, not the TCP connection), starts a fresh round and sends its exchange bound to it.
  d1.close();
  const d3 = dealer(rid);
  const n = await round(d3, mac);
  await d3.send(exch(mac, n, 'one'));
  const answer = await expect(d3, 'EXCH');
  assert.ok(answer, `no exchange answer; rank 0 logged: ${logs.join(' | ')}`);
  assert.deepEqual(unpack(answer[2] ?? answer[1]).all, ['zero', 'one']);
  assert.deepEqual(await all, ['zero', 'one']);
  assert.ok(logs.some((l) => /refused a message under rank 1's routing id .*an exchange without proof of the job secret/.test(l)), logs.join('\n'));
  world.close();
  world.release();
  d3.close();
});

test('a recorded HELLO, AUTH and EXCH replayed under the routing id get no challenge reused, no world table, no exchange answer', { timeout: 60_000 }, async () => {
  const { r0, logs, mac, dealer } = await rank0();
  const rid = randomBytes(12).toString('hex');
  const d1 = dealer(rid);
  const rec = await round(d1, mac);
  assert.ok(await expect(d1, 'WORLD'), 'no world table');
  const world = await r0;
  const all = world.exchange('zero', z.string());
  const ex = exch(mac, rec, 'one');
  await d1.send(ex);
  assert.ok(await expect(d1, 'EXCH'));
  assert.deepEqual(await all, ['zero', 'one']);
  world.close(); // rank 0 now only answers repeats, until release()
  d1.close();
  await sleep(300);
  const d2 = dealer(rid);
  await d2.send(rec.hello);
  const chal = await expect(d2, 'CHAL');
  assert.ok(chal);
  assert.ok(!Buffer.from(unpack(chal[1]).sn).equals(rec.sn), 'rank 0 reused a challenge');
  await d2.send(rec.auth);
  assert.equal(await expect(d2, 'WORLD', 1500), undefined, 'a replayed AUTH got the world table');
  await d2.send(ex);
  assert.equal(await expect(d2, 'EXCH', 1500), undefined, 'a replayed EXCH got the exchange\'s answer');
  assert.ok(logs.some((l) => /wrong job secret \(claims rank 1\)/.test(l)), logs.join('\n'));
  world.release();
  d2.close();
});

test('ranks of two srun steps at one MASTER_ADDR/PORT without TPRUN_SECRET: both sides name the steps and TPRUN_SECRET', { timeout: 90_000 }, async () => {
  // One srun per node, each its own step: the derived secret includes the step (two concurrent steps must
  // not join each other's world), so this used to read as a bare "wrong job secret".
  const { spawnRanks } = await import('./helpers/spawn-ranks.js');
  const APP = new URL('./helpers/world-app.js', import.meta.url).pathname;
  const res = await spawnRanks(2, [APP, 'hello'], {
    env: { TPRUN_JOB_ID: undefined, TPRUN_SECRET: undefined, SLURM_JOB_ID: '1234', APP_TIMEOUT_MS: '6000' },
    perRankEnv: (r) => ({ SLURM_STEP_ID: String(r) }),
    timeoutMs: 60_000,
  });
  const need = 'one world across srun steps needs TPRUN_SECRET';
  assert.ok(res[0].stderr.includes(`refused a connection from 127.0.0.1: rank 1 is from Slurm step 1234.1, this world is 1234.0: ${need}`), res[0].stderr);
  assert.ok(res[1].stderr.includes(`rank 1: the rendezvous at tcp://127.0.0.1:`) && res[1].stderr.includes(`is Slurm step 1234.0, this rank is from step 1234.1: ${need}`), res[1].stderr);
  assert.notEqual(res[1].code, 0);
  assert.notEqual(res[0].code, 0);
});
