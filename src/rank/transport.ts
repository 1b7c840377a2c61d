// TPRUN_TRANSPORT: which links carry a world's bytes. shm (the default): shared memory between ranks of one
// machine, ZeroMQ for everything else; zmq: every byte over ZeroMQ, even on one machine. Read in one place so
// that a misspelt value is refused, not taken for the default.
import { oneOf } from '../util/env.js';

export const transport = (env: NodeJS.ProcessEnv = process.env): 'shm' | 'zmq' => oneOf('TPRUN_TRANSPORT', ['shm', 'zmq'] as const, env) ?? 'shm';
