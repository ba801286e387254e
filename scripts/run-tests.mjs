#!/usr/bin/env node
// Runs the compiled tests with node:test. Unit tests always; the e2e tests (network namespaces, real
// peers) only as root, one file at a time. `--unit` runs only the unit tests, `--e2e` only e2e,
// any other argument is a substring filter on the file path.
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = new URL('..', import.meta.url).pathname;
const dist = join(root, 'dist', 'test');
const args = process.argv.slice(2);
const onlyUnit = args.includes('--unit');
const onlyE2e = args.includes('--e2e');
const filters = args.filter((a) => !a.startsWith('--'));

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out.sort();
}

const all = walk(dist).filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)));
const isE2e = (f) => relative(dist, f).startsWith('e2e');
const unit = all.filter((f) => !isE2e(f));
const e2e = all.filter(isE2e);
const isRoot = process.getuid?.() === 0;

let failed = false;
function run(files, extra) {
  if (files.length === 0) return;
  const r = spawnSync(process.execPath, ['--test', '--test-reporter=spec', ...extra, ...files], {
    stdio: 'inherit',
    env: process.env,
  });
  if (r.status !== 0) failed = true;
}

if (!onlyE2e) run(unit, []);
if (!onlyUnit) {
  if (!isRoot) {
    const msg = `e2e: ${e2e.length} namespace test files need root (they create network namespaces and TUN devices)`;
    if (process.env.CI === 'true') { console.error(`${msg}: failing because CI=true`); failed = true; }
    else console.log(`${msg}: skipped; run as root to include them`);
  } else {
    run(e2e, ['--test-concurrency=1']);
  }
}
process.exit(failed ? 1 : 0);
