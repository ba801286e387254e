// The action's post step (runs.post, post-if: always()): log out and clean up, also after a failed
// or cancelled main step.
import { isBuilt } from './bootstrap.mjs';

if (!isBuilt()) {
  // The main step never got to start an agent (it stops at a failed build).
  console.log('meshd: nothing to clean up');
} else {
  const { post } = await import('./steps.mjs');
  try {
    await post();
  } catch (e) {
    const core = await import('@actions/core');
    core.warning(`meshd cleanup: ${e instanceof Error ? e.message : String(e)}`);
  }
}
