import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MallocTrimmer, processTrimmer, memoryBreakdown } from '../../src/daemon/memory.ts';
import { native } from '../../src/native/index.ts';

const info = (free: number) => ({ arena: 8 << 20, mmap: 0, inUse: (8 << 20) - free, free, topPad: 0 });

describe('malloc trimmer', () => {
  it('trims when malloc holds a MiB or more free, at most once per interval', () => {
    let free = 4 << 20, calls = 0;
    const t = new MallocTrimmer(() => info(free), () => { calls++; free = 0; return true; }, 10_000, 1 << 20);
    assert.equal(t.tick(0), true);
    assert.equal(calls, 1);
    free = 5 << 20;
    assert.equal(t.tick(9_999), false, 'not again within the interval');
    assert.equal(t.tick(10_000), true);
    assert.equal(t.stats.trims, 2);
    assert.equal(t.stats.freedBeforeBytes, 9 << 20);
  });

  it('leaves malloc alone when little is free', () => {
    let calls = 0;
    const t = new MallocTrimmer(() => info(512 << 10), () => { calls++; return true; }, 10_000, 1 << 20);
    for (let now = 0; now < 100_000; now += 1000) t.tick(now);
    assert.equal(calls, 0);
    assert.equal(t.stats.trims, 0);
  });

  it('is off with MESHD_MALLOC_TRIM=0', () => {
    assert.equal(processTrimmer({ MESHD_MALLOC_TRIM: '0' }), undefined);
  });

  it("reads glibc's arena accounting and trims through the addon", () => {
    const a = native();
    assert.ok(a.mallocInfo && a.mallocTrim, 'the addon exports mallocInfo and mallocTrim');
    const m = a.mallocInfo();
    assert.ok(m.inUse > 0 && m.free >= 0);
    assert.equal(m.inUse + m.free, m.arena, 'bytes in use and free add up to the arenas (mallinfo2)');
    assert.equal(typeof a.mallocTrim(), 'boolean');
  });

  it('reports the V8 spaces and malloc in its breakdown', () => {
    const b = memoryBreakdown();
    assert.ok(b.bytes.rss! > 0 && b.bytes.v8_old_space! > 0 && b.bytes.malloc_in_use! > 0);
  });
});
