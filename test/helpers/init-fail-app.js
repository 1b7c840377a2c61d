// A rank program whose initWorld may fail (the test gives one rank a bad knob): that rank catches the error,
// says so and returns; its process must then end on its own and its peers must learn at once. The others
// call a barrier and report how it ended, in one line each.
import { initWorld } from '../../dist/rank/world.js';

let world;
try {
  world = await initWorld();
} catch (e) {
  console.log(JSON.stringify({ initWorld: /** @type {Error} */ (e).message }));
}
if (world) {
  try {
    await world.barrier();
    console.log(JSON.stringify({ barrier: 'done' }));
    await world.close();
  } catch (e) {
    console.log(JSON.stringify({ barrier: /** @type {Error} */ (e).message }));
    await world.close({ abort: true });
    process.exitCode = 1;
  }
}
