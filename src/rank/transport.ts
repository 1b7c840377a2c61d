// TPRUN_TRANSPORT: which links carry a world's bytes. Unset: shared memory between ranks of one machine, Unix
// sockets for their rendezvous and liveness, ZeroMQ across machines. zmq: every link over ZeroMQ, even on one
// machine; unix: one machine's data over its Unix-socket links (neither uses shared memory). Read in one
// place so that a misspelt value is refused, not taken for the default.
import { oneOf } from '../util/env.js';

export const transport = (env: NodeJS.ProcessEnv = process.env): 'zmq' | 'unix' | undefined => oneOf('TPRUN_TRANSPORT', ['zmq', 'unix'] as const, env);
