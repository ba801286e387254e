// RxBatch/TxBatch: slot layout, bounds, and the allocation budget of the per-packet operations.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { PerformanceObserver, performance } from 'node:perf_hooks';
import { RxBatch, TxBatch, slotSizeFor } from '../../src/net/batch.ts';
import { Endpoints, writeEndpointRaw } from '../../src/net/endpoint.ts';

/** Runs fn and counts the garbage collections that started while it ran (entries arrive late). */
async function gcsDuring(fn: () => void): Promise<number> {
  const starts: number[] = [];
  const obs = new PerformanceObserver((list) => { for (const e of list.getEntries()) starts.push(e.startTime); });
  obs.observe({ entryTypes: ['gc'] });
  const t0 = performance.now();
  fn();
  const t1 = performance.now();
  await new Promise((r) => setTimeout(r, 200));
  obs.disconnect();
  return starts.filter((t) => t >= t0 && t <= t1).length;
}

describe('batches', () => {
  it('sizes slots from the MTU: headroom + MTU + tailroom rounded up to 64', () => {
    assert.equal(slotSizeFor(1280), 1408);
    assert.equal(slotSizeFor(1500), 1664);
    assert.equal(slotSizeFor(1280, 16, 32), 1344);
  });

  it('places slot i at i*slotSize+headroom and bounds commit to the reserved slot', () => {
    const tx = new TxBatch({ slots: 2, slotSize: 256, headroom: 64 });
    assert.equal(tx.reserve(), 64);
    tx.commit(48, 100); // a header written into the headroom
    assert.equal(tx.reserve(), 320);
    assert.throws(() => tx.commit(100, 10), RangeError); // not in slot 1
    assert.throws(() => tx.commit(320, 200), RangeError); // runs past the slot
    tx.commit(320, 192);
    assert.equal(tx.reserve(), -1);
    assert.equal(tx.push(new Uint8Array(4), 0, 4), false);
    assert.deepEqual([...tx.offsets], [48, 320]);
    assert.deepEqual([...tx.lens], [100, 192]);
    tx.clear();
    assert.equal(tx.count, 0);
    assert.equal(tx.push(new Uint8Array(300), 0, 300), false, 'longer than capacity');
  });

  it('references bytes of another buffer without copying in a batch made with over()', () => {
    const rx = new RxBatch({ slots: 4, slotSize: 128, headroom: 16 });
    const tx = TxBatch.over(rx.buf, 4);
    assert.ok(tx.pushRef(rx.offset(2) + 16, 40));
    assert.equal(tx.offsets[0], 2 * 128 + 16 + 16);
    assert.throws(() => tx.reserve(), TypeError);
    assert.throws(() => tx.pushRef(500, 40), RangeError);
  });

  it('gives interned endpoints for UDP batches and refuses endpoint() on TUN batches', () => {
    const eps = new Endpoints();
    const rx = new RxBatch({ slots: 2, slotSize: 128, headroom: 0 }, eps);
    writeEndpointRaw('192.0.2.1', 41641, rx.addrs!, 0);
    writeEndpointRaw('2001:db8::1', 41641, rx.addrs!, 20);
    assert.equal(rx.endpoint(0).key, '192.0.2.1:41641');
    assert.equal(rx.endpoint(0), eps.of('192.0.2.1', 41641));
    assert.equal(rx.endpoint(1).key, '[2001:db8::1]:41641');
    assert.throws(() => new RxBatch({ slots: 2, slotSize: 128, headroom: 0 }).endpoint(0), TypeError);
    assert.throws(() => new RxBatch({ slots: 0, slotSize: 128, headroom: 0 }), RangeError);
    assert.throws(() => new RxBatch({ slots: 129, slotSize: 128, headroom: 0 }), RangeError);
  });

  it('allocates nothing per packet when filling batches and reading endpoints', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const eps = new Endpoints();
    const rx = new RxBatch({ slots: 128, slotSize: 1408, headroom: 64 }, eps);
    for (let i = 0; i < 128; i++) writeEndpointRaw('192.0.2.1', 1000 + (i & 7), rx.addrs!, i * 20);
    const tx = new TxBatch({ slots: 128, slotSize: 1408, headroom: 64 });
    const src = new Uint8Array(1300);
    const round = (): number => {
      let sum = 0;
      for (let i = 0; i < 128; i++) {
        const ep = rx.endpoint(i);
        if (i % 2 === 0) tx.push(src, 0, 1300, ep.raw);
        else tx.commit(tx.reserve(), 1280, ep.raw);
        sum += rx.offset(i) + rx.length(i) + ep.port;
      }
      tx.clear();
      return sum;
    };
    for (let k = 0; k < 2000; k++) round(); // warm up: interning, JIT
    gc();
    let grew = 0;
    const gcs = await gcsDuring(() => {
      const before = process.memoryUsage().heapUsed;
      for (let k = 0; k < 20_000; k++) round(); // 2.56 million packets
      grew = process.memoryUsage().heapUsed - before;
    });
    // A collection during the loop would hide allocations from the heap delta: there must be none.
    assert.equal(gcs, 0, 'garbage collections during the loop');
    // Even 8 bytes per packet would be 20 MB; allow a little for the JIT and the test itself.
    assert.ok(grew < 1_000_000, `heap grew ${grew} bytes over 2.56M packets`);
  });

  it('allocates nothing per packet for runs of datagrams from one IPv6 peer', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const rx = new RxBatch({ slots: 128, slotSize: 256, headroom: 0 }, new Endpoints());
    for (let i = 0; i < 128; i++) writeEndpointRaw('2001:db8::1', 41641, rx.addrs!, i * 20);
    const round = (): number => {
      let sum = 0;
      for (let i = 0; i < 128; i++) sum += rx.endpoint(i).port;
      return sum;
    };
    for (let k = 0; k < 2000; k++) round();
    assert.equal(rx.endpoint(0).key, '[2001:db8::1]:41641');
    assert.equal(rx.endpoint(127), rx.endpoint(0));
    gc();
    const gcs = await gcsDuring(() => { for (let k = 0; k < 20_000; k++) round(); });
    assert.equal(gcs, 0, 'garbage collections during the loop');
  });
});
