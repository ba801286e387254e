#!/usr/bin/env node
// Fuzzes every decoder meshd feeds with bytes from the network or a file (test/fuzz/targets.ts and
// targets-stack.ts) for a number of inputs per target (or a time), and prints a table per target:
// inputs, seconds, crashes, hangs, slowest input, peak heap. Coverage-guided with @jazzer.js/core
// where it installs and its native fuzzer loads; it does not on this project's machines (its
// prebuilt fuzzer needs glibc 2.38, Debian 12 has 2.36), so the default is fast-check at scale:
// each input is either a fresh structure-aware fast-check sample (1 in 5) or 1-5 libFuzzer-style
// mutations of a seed corpus (valid messages of the format plus fast-check samples,
// test/fuzz/mutate.ts), on worker threads (one per core by default).
//
//   npm run build && node scripts/fuzz.mjs [--inputs 1000000] [--seconds S] [--target NAME]... [--seed 1]
//                                          [--workers 2] [--hang-ms 1000] [--kill-ms 10000] [--heap-mb 512] [--json FILE]
//
// Bounds: an input slower than --hang-ms, timed twice (the machine may be busy), counts as a hang
// (a job's slowest input over half of that is kept as fuzz-crashes/slow-*); one still running after --kill-ms ends
// its thread and is saved; each thread's heap is capped at --heap-mb, so unbounded allocation
// kills the thread and saves the input; heap growth over the run (after GC) beyond
// --max-growth-mb fails the target. Failing inputs go to fuzz-crashes/. Exit status 1 on any.
// Without --inputs and --seconds: 1,000,000 inputs or 30 s per target, whichever comes first;
// with --inputs alone there is no time limit.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';

const root = new URL('..', import.meta.url).pathname;
const { values: opt } = parseArgs({
  options: {
    seconds: { type: 'string' },
    inputs: { type: 'string' },
    target: { type: 'string', multiple: true },
    seed: { type: 'string', default: '1' },
    workers: { type: 'string', default: String(Math.min(2, availableParallelism())) },
    'hang-ms': { type: 'string', default: '1000' },
    'kill-ms': { type: 'string', default: '10000' },
    'heap-mb': { type: 'string', default: '512' },
    'max-growth-mb': { type: 'string', default: '64' },
    engine: { type: 'string', default: 'auto' },
    json: { type: 'string' },
  },
});
const maxInputs = Number(opt.inputs ?? 1_000_000);
const seconds = opt.seconds !== undefined ? Number(opt.seconds) : opt.inputs !== undefined ? Infinity : 30;
const hangMs = Number(opt['hang-ms']), killMs = Number(opt['kill-ms']), heapMb = Number(opt['heap-mb']), maxGrowth = Number(opt['max-growth-mb']);

if (!global.gc) {
  // Re-run with --expose-gc (workers inherit it) so heap growth is measured after a real collection.
  const r = spawnSync(process.execPath, ['--expose-gc', ...process.argv.slice(1)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}

const dist = join(root, 'dist');
if (!existsSync(join(dist, 'test', 'fuzz', 'targets.js'))) {
  console.error('fuzz: dist/test/fuzz/targets.js missing: run npm run build first');
  process.exit(2);
}
const { TARGETS } = await import(join(dist, 'test', 'fuzz', 'targets.js'));
const selected = TARGETS.filter((t) => !opt.target || opt.target.includes(t.name));
if (selected.length === 0) {
  console.error(`fuzz: no target matches; targets: ${TARGETS.map((t) => t.name).join(', ')}`);
  process.exit(2);
}
const crashDir = join(root, 'fuzz-crashes');

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

const jz = jazzerStatus();
let rows;
if (jz === undefined) {
  // Coverage-guided: one libFuzzer run per target through test/fuzz/jazzer-entry.js.
  rows = selected.map((t) => {
    const r = spawnSync('npx', ['jazzer', join(dist, 'test', 'fuzz', 'jazzer-entry.js'), '--sync', '--',
      `-max_total_time=${Number.isFinite(seconds) ? seconds : 0}`, `-runs=${maxInputs}`, `-artifact_prefix=${crashDir}/${t.name}-`, '-print_final_stats=1'],
    { cwd: root, env: { ...process.env, MESHD_FUZZ_TARGET: t.name }, encoding: 'utf8' });
    const runs = Number(/stat::number_of_executed_units:\s*(\d+)/.exec(r.stderr)?.[1] ?? 0);
    return { target: t.name, inputs: runs, seconds: Number.isFinite(seconds) ? seconds : 0, crashes: r.status === 0 ? 0 : 1, hangs: 0, slowestMs: 0, peakHeapMiB: 0, growthMiB: 0, notes: [] };
  });
} else {
  console.error(`fuzz: coverage-guided engine unavailable (${jz}); fast-check and seed mutation at scale on ${opt.workers} threads`);
  rows = await runThreads();
}

/** Runs every selected target to maxInputs on worker threads; one row per target. */
async function runThreads() {
  const SHARD = 250_000;
  const queue = [];
  selected.forEach((t, ti) => {
    const shards = Math.max(1, Math.ceil(maxInputs / SHARD));
    for (let s = 0; s < shards; s++) {
      const n = Math.min(SHARD, maxInputs - s * SHARD);
      queue.push({ target: t.name, seed: (Number(opt.seed) * 1_000_003 + ti * 1009 + s * 7) >>> 0, inputs: n, seconds: seconds * n / maxInputs });
    }
  });
  const acc = new Map(selected.map((t) => [t.name, { target: t.name, inputs: 0, seconds: 0, crashes: 0, hangs: 0, slowestMs: 0, peakHeapMiB: 0, growthMiB: 0, notes: [] }]));
  const note = (name, text) => { const a = acc.get(name); if (!a.notes.includes(text)) a.notes.push(text); };
  const fold = (r) => {
    const a = acc.get(r.target);
    a.inputs += r.inputs; a.seconds += r.seconds; a.hangs += r.hangs;
    a.slowestMs = Math.max(a.slowestMs, r.slowestMs);
    a.peakHeapMiB = Math.max(a.peakHeapMiB, r.peakHeap / 2 ** 20);
    a.growthMiB = Math.max(a.growthMiB, r.growth / 2 ** 20);
    for (const c of r.crashes) { a.crashes += c.count; note(r.target, `${c.count} x ${c.key} (${c.file}) ${c.stack ?? ''}`); }
    process.stderr.write(`  ${r.target} seed ${r.seed}: ${r.inputs} inputs in ${r.seconds.toFixed(1)} s, ${r.crashes.length} crash kinds, slowest ${r.slowestMs.toFixed(1)} ms${r.slowFile ? ` (${r.slowFile})` : ''}\n`);
  };
  const workers = Math.max(1, Number(opt.workers));
  const threads = [];
  await new Promise((resolveAll) => {
    let live = 0;
    const start = () => {
      const sab = new SharedArrayBuffer(20 + 256 * 1024);
      const w = new Worker(new URL('./fuzz-worker.mjs', import.meta.url), {
        workerData: { sab, dist, crashDir, hangMs }, resourceLimits: { maxOldGenerationSizeMb: heapMb },
      });
      const th = { w, sab, job: undefined, watch: new Float64Array(sab, 0, 2), dead: false, oom: false };
      threads.push(th);
      live++;
      const next = () => {
        th.job = queue.shift();
        if (th.job) { th.t0 = performance.now(); w.postMessage(th.job); } else { th.dead = true; void w.terminate(); }
      };
      w.on('message', (m) => {
        if (m.ready) { next(); return; }
        fold(m);
        next();
      });
      w.on('error', (e) => {
        if (e.code === 'ERR_WORKER_OUT_OF_MEMORY') th.oom = true;
        else console.error(`fuzz: worker error: ${e.stack ?? e}`);
      });
      w.on('exit', () => {
        live--;
        if (th.job && !th.dead) {
          // Killed by the watchdog (hang) or out of memory: save the input, count it, resume the job.
          const why = th.oom ? `heap over ${heapMb} MiB (unbounded allocation)` : `input still running after ${killMs} ms (hang)`;
          const input = savedInput(th);
          const done = th.watch[1];
          const file = join(crashDir, `${th.job.target}-${th.oom ? 'oom' : 'hang'}-${createHash('sha1').update(input).digest('hex').slice(0, 12)}.bin`);
          mkdirSync(crashDir, { recursive: true });
          writeFileSync(file, input);
          const a = acc.get(th.job.target);
          if (th.oom) a.crashes++; else a.hangs++;
          a.inputs += done; a.seconds += (performance.now() - th.t0) / 1000;
          note(th.job.target, `${why} (${file})`);
          console.error(`fuzz: ${th.job.target}: ${why}; input saved to ${file}`);
          if (th.job.inputs - done > 0) queue.unshift({ ...th.job, seed: (th.job.seed + 0x9e37) >>> 0, inputs: th.job.inputs - done });
          th.job = undefined;
          th.dead = true;
          start();
          return;
        }
        if (live === 0 && queue.length === 0) resolveAll();
      });
    };
    const watchdog = setInterval(() => {
      for (const th of threads) {
        const s = th.watch[0];
        if (!th.dead && th.job && s > 0 && Date.now() - s > killMs) void th.w.terminate();
      }
    }, 250);
    for (let i = 0; i < workers; i++) start();
    const done = setInterval(() => { if (threads.every((t) => t.dead) && queue.length === 0) { clearInterval(done); clearInterval(watchdog); resolveAll(); } }, 200);
  });
  return [...acc.values()];
}

function savedInput(th) {
  const len = new Int32Array(th.sab, 16, 1)[0];
  return Buffer.from(new Uint8Array(th.sab, 20, len));
}

const fmt = (r) => ({
  target: r.target, inputs: r.inputs, seconds: Number(r.seconds.toFixed(1)), 'inputs/s': Math.round(r.inputs / Math.max(r.seconds, 1e-9)),
  crashes: r.crashes, hangs: r.hangs, 'slowest ms': Number(r.slowestMs.toFixed(1)), 'peak heap MiB': Number(r.peakHeapMiB.toFixed(1)), 'heap growth MiB': Number(r.growthMiB.toFixed(1)),
});
const table = rows.map(fmt);
for (const r of rows) for (const n of r.notes) console.log(`  ${r.target}: ${n}`);
console.table(table);
const cols = Object.keys(table[0]);
console.log(`\n| ${cols.join(' | ')} |\n|${cols.map(() => '---').join('|')}|\n${table.map((r) => `| ${cols.map((c) => r[c]).join(' | ')} |`).join('\n')}\n`);
console.log(`seconds = thread time per target (${opt.workers} threads); max RSS of the process ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MiB`);
if (opt.json) writeFileSync(opt.json, JSON.stringify({ seed: Number(opt.seed), workers: Number(opt.workers), rows: table }, null, 2));
const bad = rows.filter((r) => r.crashes > 0 || r.hangs > 0 || r.growthMiB > maxGrowth || r.inputs < Math.min(maxInputs, Number.isFinite(seconds) ? 0 : maxInputs));
if (bad.length > 0) {
  console.log(`fuzz: FAILED: ${bad.map((r) => r.target).join(', ')}${existsSync(crashDir) ? ` (inputs in ${crashDir})` : ''}`);
  process.exit(1);
}
console.log(`fuzz: ${rows.length} targets, ${rows.reduce((a, r) => a + r.inputs, 0)} inputs, no crash, hang or heap growth over ${maxGrowth} MiB`);
