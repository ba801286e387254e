import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryKeeper, processKeeper, memoryBreakdown, watchMajorGc, GC_INTERVAL_MS } from '../../src/daemon/memory.ts';
import { agentEnv } from '../../src/cli/agentspawn.ts';
import { native } from '../../src/native/index.ts';

const info = (free: number) => ({ arena: 8 << 20, mmap: 0, inUse: (8 << 20) - free, free, topPad: 0 });

describe('agent memory', () => {
  it('trims when malloc holds a MiB or more free, at most once per interval', () => {
    let free = 4 << 20, calls = 0;
    const k = new MemoryKeeper({ mallocInfo: () => info(free), mallocTrim: () => { calls++; free = 0; return true; } }, { trimIntervalMs: 10_000, minFree: 1 << 20 });
    assert.deepEqual(k.tick(0), { gc: false, trim: true });
    assert.equal(calls, 1);
    free = 5 << 20;
    assert.equal(k.tick(9_999).trim, false, 'not again within the interval');
    assert.equal(k.tick(10_000).trim, true);
    assert.equal(k.stats.trims, 2);
  });

  it('leaves malloc alone when little is free', () => {
    let calls = 0;
    const k = new MemoryKeeper({ mallocInfo: () => info(512 << 10), mallocTrim: () => { calls++; return true; } }, { trimIntervalMs: 10_000, minFree: 1 << 20 });
    for (let now = 0; now < 100_000; now += 1000) k.tick(now);
    assert.equal(calls, 0);
  });

  it('forces a full GC every interval, the first one interval after start, and trims right after it', () => {
    const did: string[] = [];
    let free = 0;
    const k = new MemoryKeeper({
      fullGc: () => { did.push('gc'); free = 3 << 20; },
      mallocInfo: () => info(free),
      mallocTrim: () => { did.push('trim'); free = 0; return true; },
    }, { gcIntervalMs: 120_000, trimIntervalMs: 10_000, minFree: 1 << 20 });
    for (let now = 0; now <= 360_000; now += 1000) k.tick(now);
    assert.deepEqual(did, ['gc', 'trim', 'gc', 'trim', 'gc', 'trim'], 'at 120, 240 and 360 s');
    assert.equal(k.stats.gcs, 3);
  });

  it('holds a due full GC while packets move and runs it at the first quiet tick', () => {
    let gcs = 0, packets = 0;
    const k = new MemoryKeeper({ fullGc: () => { gcs++; } }, { gcIntervalMs: 120_000 });
    for (let now = 0; now <= 200_000; now += 1000) k.tick(now, (packets += 10));
    assert.equal(gcs, 0, 'busy the whole time: V8 keeps its own schedule');
    assert.equal(k.tick(201_000, packets).gc, true, 'the first tick without new packets');
    assert.equal(gcs, 1);
    assert.equal(k.tick(202_000, packets).gc, false, 'then the next one an interval later');
  });

  it('is off with MESHD_MALLOC_TRIM=0 and MESHD_FORCE_GC=0', () => {
    assert.equal(processKeeper({ MESHD_MALLOC_TRIM: '0', MESHD_FORCE_GC: '0' }), undefined);
    assert.ok(processKeeper({ MESHD_MALLOC_TRIM: '0' }), 'full GCs alone');
  });

  it("reads glibc's arena accounting and trims through the addon", () => {
    const a = native();
    assert.ok(a.mallocInfo && a.mallocTrim, 'the addon exports mallocInfo and mallocTrim');
    const m = a.mallocInfo();
    assert.ok(m.inUse > 0 && m.free >= 0);
    assert.equal(m.inUse + m.free, m.arena, 'bytes in use and free add up to the arenas (mallinfo2)');
    assert.equal(typeof a.mallocTrim(), 'boolean');
  });

  it("forces a real full GC through V8, seen as the live heap in the breakdown", async () => {
    watchMajorGc();
    const k = processKeeper({ MESHD_MALLOC_TRIM: '0' });
    assert.ok(k);
    k.tick(0);
    assert.equal(k.tick(GC_INTERVAL_MS).gc, true);
    assert.equal(k.stats.gcs, 1);
    await new Promise((r) => setTimeout(r, 50));
    const live = memoryBreakdown().bytes.heap_live;
    assert.ok(live !== undefined && live > 0 && live <= process.memoryUsage().heapTotal, `heap_live ${live}`);
  });

  it('reports the V8 spaces and malloc in its breakdown', () => {
    const b = memoryBreakdown();
    assert.ok(b.bytes.rss! > 0 && b.bytes.v8_old_space! > 0 && b.bytes.malloc_in_use! > 0);
  });

  it('starts the agent with two malloc arenas unless the caller chose a number', () => {
    assert.equal(agentEnv({ PATH: '/bin' }).MALLOC_ARENA_MAX, '2');
    assert.equal(agentEnv({ PATH: '/bin' }).PATH, '/bin');
    assert.equal(agentEnv({ MALLOC_ARENA_MAX: '8' }).MALLOC_ARENA_MAX, '8');
  });
});
