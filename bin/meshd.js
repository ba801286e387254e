#!/usr/bin/env node
// Entry point: the compiled CLI lives in dist/ (npm run build). The esbuild bundle of the CLI and
// agent (scripts/bundle.mjs, run by npm run build:ts right after tsc) starts faster than tsc's ~100
// modules. It is not used when dist/src is newer by over a minute (tsc ran alone after it); an
// installed package's files carry their extraction times, seconds apart in either order.
import { existsSync, statSync } from 'node:fs';
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
// `up` starts its agent (a second Node process) before the CLI's own modules load
// (src/cli/agentspawn.ts); `up` adopts it, or stops it when its checked flags differ.
if (process.argv.includes('up')) await (await import(new URL('agentspawn.js', dir).href)).startEarly(process.argv.slice(2));
await import(dir.href);
