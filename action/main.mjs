// The action's main step (runs.main in action.yml).
import { ensureBuilt } from './bootstrap.mjs';

ensureBuilt();
const { main } = await import('./steps.mjs');
await main();
