#!/usr/bin/env node
// Entry point: the compiled CLI lives in dist/ (npm run build).
import { existsSync } from 'node:fs';
// Scrub a literal --authkey from the process list first thing, before the CLI's modules load.
if (process.argv.some((a) => a === '--authkey' || a.startsWith('--authkey='))) process.title = 'meshd';
const main = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(main)) {
  console.error('meshd: not built yet: run `npm run build` in the meshd directory');
  process.exit(1);
}
await import(main.href);
