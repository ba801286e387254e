// The action's main step (runs.main in action.yml).
import { ensureBuilt } from './bootstrap.mjs';

ensureBuilt();
const { main } = await import('./steps.mjs');
try {
  await main();
} catch (e) {
  // A missing input and the like: one line, as the runner shows errors.
  const core = await import('@actions/core');
  core.setFailed(e instanceof Error ? e.message : String(e));
}
