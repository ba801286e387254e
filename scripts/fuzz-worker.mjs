// One fuzzing thread of scripts/fuzz.mjs: runs jobs (target, seed, number of inputs) it is sent
// and reports per job. Before each input it writes the input and its start time into shared
// memory, so the main thread can name the input that hangs (it then ends this thread) or that
// makes the heap run out (this thread dies with ERR_WORKER_OUT_OF_MEMORY under its resourceLimits).
import { parentPort, workerData } from 'node:worker_threads';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import v8 from 'node:v8';

const { sab, dist, crashDir, hangMs } = workerData;
const watch = new Float64Array(sab, 0, 2); // [input start (Date.now), inputs done in the job]
const inLen = new Int32Array(sab, 16, 1);
const inBytes = new Uint8Array(sab, 20);
const { TARGETS, runOne } = await import(join(dist, 'test', 'fuzz', 'targets.js'));
const { Mutator } = await import(join(dist, 'test', 'fuzz', 'mutate.js'));
const fc = (await import('fast-check')).default;


function runJob(job) {
  const t = TARGETS.find((x) => x.name === job.target);
  const raw = fc.uint8Array({ maxLength: 512, size: 'max' });
  const arb = t.arb ? fc.oneof({ weight: 4, arbitrary: t.arb }, { weight: 1, arbitrary: raw }) : raw;
  const mut = new Mutator(job.seed, { dict: t.dict ?? [], maxLen: t.maxLen ?? 4096 });
  const rng = mut.rng;
  const fresh_ = t.fresh ?? 0.2;
  const corpus = [...(t.seeds?.() ?? []), ...fc.sample(arb, { numRuns: 300, seed: job.seed })];
  let fresh = [], freshAt = 0, batch = 0;
  global.gc?.();
  const heap0 = v8.getHeapStatistics().used_heap_size;
  let peak = heap0;
  const crashes = new Map();
  let inputs = 0, hangs = 0, slowest = 0, slowestInput;
  const t0 = performance.now(), deadline = t0 + job.seconds * 1000;
  while (inputs < job.inputs && (inputs & 255 || performance.now() < deadline)) {
    let d;
    if (rng.chance(fresh_)) {
      if (freshAt >= fresh.length) { fresh = fc.sample(arb, { numRuns: 500, seed: job.seed * 7919 + ++batch }); freshAt = 0; }
      d = fresh[freshAt++];
    } else {
      d = mut.mutate(corpus[rng.below(corpus.length)], corpus[rng.below(corpus.length)]);
    }
    const n = Math.min(d.length, inBytes.length);
    inBytes.set(n === d.length ? d : d.subarray(0, n));
    inLen[0] = n;
    watch[0] = Date.now();
    let s = performance.now();
    const e = runOne(t, d);
    let ms = performance.now() - s;
    if (ms > hangMs) {
      // The machine is shared: time a slow input again, and call it a hang only if it is slow twice.
      s = performance.now();
      runOne(t, d);
      ms = Math.min(ms, performance.now() - s);
    }
    watch[0] = 0;
    if (ms > slowest) { slowest = ms; slowestInput = d; }
    if (ms > hangMs) hangs++;
    if (e) {
      const key = `${e.name}: ${String(e.message).slice(0, 160)}`;
      let c = crashes.get(key);
      if (!c) {
        const file = join(crashDir, `${t.name}-${createHash('sha1').update(d).digest('hex').slice(0, 12)}.bin`);
        mkdirSync(crashDir, { recursive: true });
        writeFileSync(file, d);
        c = { key, count: 0, file, stack: e.stack?.split('\n').slice(0, 4).join(' | ') };
        crashes.set(key, c);
      }
      c.count++;
    }
    inputs++;
    if ((inputs & 511) === 0) {
      const h = v8.getHeapStatistics().used_heap_size;
      if (h > peak) peak = h;
      watch[1] = inputs;
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  // Keep the slowest input of a job when it took over half the hang bound, to look at.
  let slowFile;
  if (slowest > hangMs / 2 && slowestInput) {
    slowFile = join(crashDir, `slow-${t.name}-${job.seed}.bin`);
    mkdirSync(crashDir, { recursive: true });
    writeFileSync(slowFile, slowestInput);
  }
  fresh = [];
  global.gc?.();
  const growth = v8.getHeapStatistics().used_heap_size - heap0;
  return { target: t.name, seed: job.seed, inputs, seconds, hangs, slowestMs: slowest, slowFile, peakHeap: peak, growth, crashes: [...crashes.values()] };
}

parentPort.on('message', (job) => {
  watch[1] = 0;
  parentPort.postMessage(runJob(job));
});
parentPort.postMessage({ ready: true });
