#!/usr/bin/env node
// Entry point: the compiled CLI lives in dist/ (npm run build). The esbuild bundle of the CLI and
// agent (scripts/bundle.mjs, run by npm run build:ts right after tsc) starts faster than tsc's ~100
// modules. It is not used when dist/src is newer by over a minute (tsc ran alone after it); an
// installed package's files carry their extraction times, seconds apart in either order.
import { existsSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
// An agent `up` started (an IPC channel): its CLI sends the identity and the `up` request as soon
// as it has them, possibly while this process still loads; Node drops a message no listener takes,
// so they are queued from here until the agent takes them (src/cli/tailnet.ts daemonCommand).
if (process.send && process.argv.includes('daemon')) {
  const queue = [];
  const listener = (m) => { queue.push(m); };
  process.on('message', listener);
  globalThis.meshdEarlyIpc = { queue, listener };
}
// Scrub a literal --authkey from the process list first thing, before the CLI's modules load.
if (process.argv.some((a) => a === '--authkey' || a.startsWith('--authkey='))) process.title = 'meshd';
const main = new URL('../dist/src/cli/main.js', import.meta.url);
const bundle = new URL('../dist/bundle/cli/main.js', import.meta.url);
const mtime = (u) => { try { return statSync(u).mtimeMs; } catch { return -1; } };
const dir = process.env.MESHD_NO_BUNDLE !== '1' && mtime(bundle) > 0 && mtime(bundle) >= mtime(main) - 60_000 ? bundle : main;
if (!existsSync(dir)) {
  console.error('meshd: not built yet: run `npm run build` in the meshd directory');
  process.exit(1);
}
// The agent `up` starts (`daemon` with plain flags) runs from its own CommonJS bundle, compiled with
// a V8 code cache (bin/codecache.js, src/cli/agentmain.ts); any other command line goes to main.
const agent = new URL('../dist/bundle/cli/agent.cjs', import.meta.url);
const ranAgent = dir === bundle && process.argv.includes('daemon') && existsSync(agent)
  && await (await import('./codecache.js')).loadCached(fileURLToPath(agent)).runAgent(process.argv.slice(2));
// Done (an agent that ran exits on its own): a queue nobody took must not hold the process.
const dropEarlyIpc = () => { if (globalThis.meshdEarlyIpc) process.off('message', globalThis.meshdEarlyIpc.listener); };
if (ranAgent) dropEarlyIpc();
if (!ranAgent) {
  // `up` starts its agent (a second Node process) before the CLI's modules load
  // (src/cli/agentspawn.ts); `up` adopts it, or stops it when its checked flags differ.
  if (process.argv.includes('up')) await (await import(new URL('agentspawn.js', dir).href)).startEarly(process.argv.slice(2));
  await import(dir.href);
  dropEarlyIpc();
}
