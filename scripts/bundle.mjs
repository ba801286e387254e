#!/usr/bin/env node
// Bundles the CLI and the agent (src/cli/main.ts and what it imports, dynamic imports as lazily
// loaded chunks) into dist/bundle/cli/ with esbuild, which bin/meshd.js prefers over dist/src/.
// Why: Node loads ~100 separate ES modules of dist/src in ~140 ms of CPU per process (resolving,
// reading and compiling each), and `meshd up` starts two processes (CLI and agent) before the first
// packet; the bundle's few chunks load in about half that. tsc still type-checks and compiles
// dist/src (tests import it). npm packages stay external: they load from node_modules as before.
// The chunks sit at the same depth as dist/src/cli/, so paths relative to import.meta.url
// (bin/meshd.js for the agent, the package root for the addon) resolve the same.
//   node scripts/bundle.mjs   (part of npm run build:ts)
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outdir = join(root, 'dist', 'bundle', 'cli');
rmSync(join(root, 'dist', 'bundle'), { recursive: true, force: true });
await build({
  absWorkingDir: root,
  // agentspawn: bin/meshd.js loads it alone to start `up`'s agent before main (src/cli/agentspawn.ts).
  // netstack-worker: the userspace stack's thread, started by new URL('./netstack-worker.js',
  // import.meta.url) from a chunk in the same folder (src/daemon/netstack-thread.ts).
  entryPoints: { main: 'src/cli/main.ts', agentspawn: 'src/cli/agentspawn.ts', 'netstack-worker': 'src/daemon/netstack-worker.ts' },
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  sourcemap: 'linked',
  logLevel: 'warning',
});

// The agent `up` starts (src/cli/agentmain.ts) as one CommonJS file, which bin/meshd.js compiles with
// a V8 code cache (bin/codecache.js): V8 caches code for scripts, not for ES modules, in Node 20.
// Its first line names the build; the cache made below from it carries the same name, so a cache
// never meets another build's code. import.meta.url becomes the file's own URL.
const buildId = randomBytes(6).toString('hex');
await build({
  absWorkingDir: root,
  // early: the login `up` begins in the CLI process for the agent it starts (src/cli/earlylogin.ts,
  // loaded by agentspawn.ts): its ~100 kB are on the way to the register request as well.
  entryPoints: { agent: 'src/cli/agentmain.ts', early: 'src/cli/earlylogin.ts' },
  outdir,
  outExtension: { '.js': '.cjs' },
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  // The @noble packages go in too, so their code is in the cache (as ES modules, Node compiles them
  // at each start). dns-packet stays a require at run time (src/dns/codec.ts).
  sourcemap: 'linked',
  define: { 'import.meta.url': '__meshdUrl' },
  banner: { js: `// meshd-build ${buildId}\nvar __meshdUrl = require('node:url').pathToFileURL(__filename).href;` },
  logLevel: 'warning',
});
// The cache, made in a separate process by the loader itself after loading the modules the agent
// needs until its first map (agentmain warm()). A failure leaves no cache: the agent then compiles
// as any script, a few tens of ms slower.
for (const name of ['agent', 'early']) {
  const warm = spawnSync(process.execPath, [join(root, 'bin', 'codecache.js'), '--write', join(outdir, `${name}.cjs`)], { encoding: 'utf8', timeout: 60_000 });
  if (warm.status !== 0) console.error(`bundle: no code cache for ${name}.cjs: ${(warm.stderr || warm.error?.message || '').trim().split('\n').pop()}`);
}
