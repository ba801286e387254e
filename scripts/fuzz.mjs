#!/usr/bin/env node
// Fuzzes every decoder meshd feeds with bytes from the network or a file (test/fuzz/targets.ts),
// each for a given time or number of inputs, and reports inputs run, crashes, hangs and memory per
// target. Coverage-guided with @jazzer.js/core when it is installed and its native fuzzer loads
// on this machine; otherwise fast-check at scale (structure-aware inputs mixed with raw bytes,
// a new seed per batch). Crashing inputs are written to fuzz-crashes/ for regression tests.
//
//   npm run build && node scripts/fuzz.mjs [--seconds 30] [--inputs 1000000] [--target netmap] [--seed 1]
//
// Exit status 1 when any target crashed, hung (one input over --hang-ms) or grew the heap by more
// than --max-growth-mb after a forced GC.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';

const root = new URL('..', import.meta.url).pathname;
const { values: opt } = parseArgs({
  options: {
    seconds: { type: 'string', default: '30' },
    inputs: { type: 'string', default: '1000000' },
    target: { type: 'string', multiple: true },
    seed: { type: 'string', default: '1' },
    'hang-ms': { type: 'string', default: '1000' },
    'max-growth-mb': { type: 'string', default: '64' },
    engine: { type: 'string', default: 'auto' },
  },
});
const seconds = Number(opt.seconds), maxInputs = Number(opt.inputs), hangMs = Number(opt['hang-ms']), maxGrowth = Number(opt['max-growth-mb']);

if (!global.gc) {
  // Re-run with --expose-gc so heap growth is measured after a real collection.
  const r = spawnSync(process.execPath, ['--expose-gc', ...process.argv.slice(1)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}

const targetsPath = join(root, 'dist', 'test', 'fuzz', 'targets.js');
if (!existsSync(targetsPath)) {
  console.error('fuzz: dist/test/fuzz/targets.js missing: run npm run build first');
  process.exit(2);
}
const { TARGETS, runOne } = await import(targetsPath);
const fc = (await import('fast-check')).default;
const selected = TARGETS.filter((t) => !opt.target || opt.target.includes(t.name));
if (selected.length === 0) {
  console.error(`fuzz: no target matches; targets: ${TARGETS.map((t) => t.name).join(', ')}`);
  process.exit(2);
}

/** Whether the coverage-guided engine can run here; the reason when not. */
function jazzerStatus() {
  if (opt.engine === 'fast-check') return 'not requested';
  try {
    const req = createRequire(join(root, 'package.json'));
    req.resolve('@jazzer.js/core');
    req('@jazzer.js/fuzzer');
    return undefined;
  } catch (e) {
    return String(e.message).split('\n')[0];
  }
}

const crashDir = join(root, 'fuzz-crashes');
const results = [];
const jz = jazzerStatus();
if (jz === undefined && opt.engine !== 'fast-check') {
  // Coverage-guided: one libFuzzer run per target through test/fuzz/jazzer-entry.js.
  for (const t of selected) {
    const r = spawnSync('npx', ['jazzer', join(root, 'dist', 'test', 'fuzz', 'jazzer-entry.js'), '--sync', '--',
      `-max_total_time=${seconds}`, `-runs=${maxInputs}`, `-artifact_prefix=${crashDir}/${t.name}-`, '-print_final_stats=1'],
    { cwd: root, env: { ...process.env, MESHD_FUZZ_TARGET: t.name }, encoding: 'utf8' });
    const runs = Number(/stat::number_of_executed_units:\s*(\d+)/.exec(r.stderr)?.[1] ?? 0);
    results.push({ target: t.name, engine: 'jazzer', inputs: runs, seconds, crashes: r.status === 0 ? 0 : 1, hangs: 0, growthMb: 0 });
  }
} else {
  console.log(`fuzz: coverage-guided engine unavailable (${jz}); using fast-check at scale`);
  for (const t of selected) results.push(runFastCheck(t));
}

function runFastCheck(t) {
  const arb = t.arb ? fc.oneof({ weight: 4, arbitrary: t.arb }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 512 }) }) : fc.uint8Array({ maxLength: 512 });
  global.gc();
  const heap0 = process.memoryUsage().heapUsed;
  const t0 = performance.now();
  let inputs = 0, hangs = 0, slowest = 0, batch = 0;
  const crashes = new Map();
  while (inputs < maxInputs && performance.now() - t0 < seconds * 1000) {
    const n = Math.min(2000, maxInputs - inputs);
    const seed = Number(opt.seed) * 1_000_003 + batch++;
    for (const d of fc.sample(arb, { numRuns: n, seed })) {
      const s = performance.now();
      const e = runOne(t, d);
      const ms = performance.now() - s;
      if (ms > slowest) slowest = ms;
      if (ms > hangMs) hangs++;
      if (e) {
        const key = `${e.name}: ${e.message.slice(0, 120)}`;
        if (!crashes.has(key)) {
          crashes.set(key, { count: 0, stack: e.stack?.split('\n').slice(0, 3).join(' | ') });
          mkdirSync(crashDir, { recursive: true });
          writeFileSync(join(crashDir, `${t.name}-${crashes.size}.bin`), d);
        }
        crashes.get(key).count++;
      }
    }
    inputs += n;
  }
  const secs = (performance.now() - t0) / 1000;
  global.gc();
  const growthMb = (process.memoryUsage().heapUsed - heap0) / 2 ** 20;
  for (const [k, v] of crashes) console.log(`  ${t.name}: ${v.count} x ${k}\n    ${v.stack}`);
  return { target: t.name, engine: 'fast-check', inputs, seconds: Number(secs.toFixed(1)), rate: Math.round(inputs / secs), crashes: [...crashes.values()].reduce((a, v) => a + v.count, 0), hangs, slowestMs: Number(slowest.toFixed(1)), growthMb: Number(growthMb.toFixed(1)) };
}

console.table(results);
console.log(`max RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MiB`);
const bad = results.filter((r) => r.crashes > 0 || r.hangs > 0 || r.growthMb > maxGrowth);
if (bad.length > 0) {
  console.log(`fuzz: FAILED: ${bad.map((r) => r.target).join(', ')}${existsSync(crashDir) ? ` (inputs in ${crashDir})` : ''}`);
  process.exit(1);
}
console.log(`fuzz: ${results.length} targets, ${results.reduce((a, r) => a + r.inputs, 0)} inputs, no crash, hang or heap growth over ${maxGrowth} MiB`);
