// A copy inside the kernel (kernel-copy.ts) that fails names both of its files and the errno by name,
// with node's `code`, so a full output disk does not read as a fault of the checkpoint file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyError } from '../dist/checkpoint/kernel-copy.js';
import { withPath } from '../dist/checkpoint/outdir.js';

test('kernel copy: a failure names source and output and the errno by name', () => {
  const src = 'ckpt/model-00001-of-00002.safetensors', dst = 'out.tmp/rank0.safetensors';
  for (const [errno, code] of /** @type {const} */ ([[28, 'ENOSPC'], [5, 'EIO'], [27, 'EFBIG'], [122, 'EDQUOT']])) {
    const e = copyError(errno, src, dst);
    assert.equal(e.message, `${src} -> ${dst}: copy_file_range failed: ${code}`);
    assert.equal(e.code, code);
    // Already naming the output, it is not prefixed again (safetensors.ts's write errors).
    assert.equal(/** @type {Error} */ (withPath(e, dst)).message, e.message);
  }
  // An errno without a name on this platform: its number, still with a code.
  const e = copyError(100000, src, dst);
  assert.match(e.message, /copy_file_range failed: errno 100000$/);
  assert.equal(typeof e.code, 'string');
});
