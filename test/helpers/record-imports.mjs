// Preloaded (NODE_OPTIONS=--import=...): records the URL of every ES module this process and the ranks
// it starts resolve into $RECORD_IMPORTS ("pid url" lines), so a test can prove what a launch loads.
import { register } from 'node:module';

if (process.env.RECORD_IMPORTS) register('./record-imports-hooks.mjs', import.meta.url);
