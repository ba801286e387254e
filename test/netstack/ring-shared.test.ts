// PacketRing: batches of packets in shared memory between two threads. Both ends in one thread
// (two PacketRing objects over one SharedArrayBuffer, as the two threads hold them) for the
// bookkeeping, then a real Worker echoing packets back to check the wake-ups across threads.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { PacketRing, ringBytes, ringConsumer, SLEEP_BOUNDS_MS, SPIN_TURNS, type FrameBatch, type RingShape } from '../../src/netstack/ring-shared.ts';

const shape: RingShape = { frames: 4, slots: 8, slotSize: 128, headroom: 16 };

function pair(s: RingShape = shape): { prod: PacketRing; cons: PacketRing } {
  const prod = PacketRing.create(s);
  return { prod, cons: new PacketRing(prod.sab, s) };
}

/** Packet number n: its length and its bytes are a function of n. */
function packet(n: number, max = 112): Uint8Array {
  const len = 1 + ((n * 37) % max);
  const p = new Uint8Array(len);
  for (let i = 0; i < len; i++) p[i] = (n + i * 7) & 0xff;
  return p;
}

function collect(cons: PacketRing): Uint8Array[] {
  const out: Uint8Array[] = [];
  cons.drain((b: FrameBatch) => { for (let k = 0; k < b.count; k++) out.push(b.buf.slice(b.offset(k), b.offset(k) + b.lens[k]!)); }, 1000);
  return out;
}

describe('PacketRing', () => {
  it('is empty at first: peek gives nothing and drain reports no more', () => {
    const { prod, cons } = pair();
    assert.equal(cons.peek(), undefined);
    assert.equal(cons.drain(() => assert.fail('no frame'), 10), 0);
    prod.publish(); // nothing filled: publishes nothing
    assert.equal(cons.pending, 0);
  });

  it('moves packets in order across frame boundaries and many wraparounds, byte-identical', () => {
    const { prod, cons } = pair();
    let sent = 0, got = 0;
    // 3 frames per round (one of them partial) x 50 rounds: the 4-frame ring wraps ~37 times.
    for (let round = 0; round < 50; round++) {
      const n = 2 * shape.slots + 1 + (round % shape.slots);
      for (let i = 0; i < n; i++) assert.ok(prod.push(packet(sent + i), 0, packet(sent + i).length));
      prod.publish();
      sent += n;
      const out = collect(cons);
      for (const p of out) assert.deepEqual(p, packet(got++));
      assert.equal(got, sent);
    }
    assert.equal(prod.dropped, 0);
  });

  it('a full ring drops and counts, loses nothing already published, and takes packets again once drained', () => {
    const { prod, cons } = pair();
    const cap = shape.frames * shape.slots;
    let accepted = 0;
    for (let i = 0; i < cap + 5; i++) if (prod.push(packet(i), 0, packet(i).length)) accepted++;
    prod.publish();
    assert.equal(accepted, cap);
    assert.equal(prod.dropped, 5);
    assert.equal(cons.pending, shape.frames);
    const out = collect(cons);
    assert.equal(out.length, cap);
    out.forEach((p, i) => assert.deepEqual(p, packet(i)));
    assert.ok(prod.push(packet(999), 0, packet(999).length));
    prod.publish();
    assert.deepEqual(collect(cons), [packet(999)]);
  });

  it('takes a packet of exactly slotSize - headroom bytes and drops (counts) a longer one', () => {
    const { prod, cons } = pair();
    const max = shape.slotSize - shape.headroom;
    const big = new Uint8Array(max).fill(0xab), tooBig = new Uint8Array(max + 1);
    assert.ok(prod.push(big, 0, max));
    assert.equal(prod.push(tooBig, 0, max + 1), false);
    prod.publish();
    assert.equal(prod.dropped, 1);
    const out = collect(cons);
    assert.equal(out.length, 1);
    assert.deepEqual(out[0], big);
  });

  it('gives each frame as a batch with headroom before and room after every packet (the data plane encrypts in place)', () => {
    const { prod, cons } = pair();
    for (let i = 0; i < 3; i++) prod.push(packet(i), 0, packet(i).length);
    prod.publish();
    const b = cons.peek()!;
    assert.equal(b.count, 3);
    assert.equal(b.buf, cons.data, 'every frame is a view of the one data buffer');
    for (let k = 0; k < 3; k++) {
      assert.equal(b.offset(k) - shape.headroom, b.base + k * shape.slotSize);
      assert.equal(b.slotEnd(k), b.base + (k + 1) * shape.slotSize);
    }
    cons.release();
    assert.equal(cons.peek(), undefined);
  });

  it('drain stops after maxFrames and pending says more are waiting', () => {
    const { prod, cons } = pair();
    for (let i = 0; i < shape.slots * 3; i++) prod.push(packet(i), 0, packet(i).length);
    prod.publish();
    let frames = 0;
    assert.equal(cons.drain(() => { frames++; }, 2), 2);
    assert.equal(frames, 2);
    assert.equal(cons.pending, 1, 'one frame still waits');
    assert.equal(cons.drain(() => { frames++; }, 2), 1);
    assert.equal(frames, 3);
  });

  it('waitNonEmpty wakes at once when frames wait, else on the next publish', async () => {
    const { prod, cons } = pair();
    let woke = 0;
    cons.waitNonEmpty(() => { woke++; });
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(woke, 0, 'nothing published: still asleep');
    prod.push(packet(1), 0, packet(1).length);
    prod.publish();
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(woke, 1);
    cons.waitNonEmpty(() => { woke++; });
    await new Promise((r) => setImmediate(r));
    assert.equal(woke, 2, 'a frame already waits: woken without a publish');
  });

  it('ringConsumer: a producer publishing every loop turn wakes the consumer once, not per batch; idle, it sleeps', { timeout: 10_000 }, async () => {
    const { prod, cons } = pair();
    let got = 0, drains = 0;
    const c = ringConsumer(cons, (b) => { got += b.count; }, 4, { before: () => { drains++; }, after: () => {} });
    c.start();
    for (let turn = 0; turn < 200; turn++) {
      prod.push(packet(turn), 0, packet(turn).length);
      prod.publish();
      await new Promise((r) => setImmediate(r));
    }
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(got, 200);
    const woken = c.wakeups;
    assert.ok(woken <= 1, `woken ${woken} times for 200 batches`);
    const before = drains;
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(drains, before, `asleep after ${SPIN_TURNS} idle turns: no more polling`);
    prod.push(packet(1), 0, packet(1).length);
    prod.publish();
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(got, 201);
    assert.equal(c.wakeups, woken + 1, 'the publish after a sleep wakes it');
    // The sleep before that publish lasted ~50 ms: counted in the class of 5 ms and longer.
    assert.equal(c.sleeps.reduce((a, b) => a + b, 0), c.wakeups, 'every wake-up ends one counted sleep');
    assert.ok(c.sleeps[SLEEP_BOUNDS_MS.length]! >= 1, `sleeps by length ${c.sleeps.join(' ')}`);
    c.stop();
  });

  it('rejects bad shapes and a buffer too small for its shape with one-line errors', () => {
    assert.throws(() => PacketRing.create({ ...shape, frames: 3 }), /frames must be a power of two/);
    assert.throws(() => PacketRing.create({ ...shape, slots: 0 }), /slots must be in 1\.\.128/);
    assert.throws(() => new PacketRing(new SharedArrayBuffer(ringBytes(shape) - 1), shape), /needs/);
  });

  it('carries 20,000 packets to a worker thread and back intact, in order, none dropped', { timeout: 30_000 }, async () => {
    const s: RingShape = { frames: 8, slots: 16, slotSize: 256, headroom: 16 };
    const there = PacketRing.create(s), back = PacketRing.create(s);
    const url = new URL('../../src/netstack/ring-shared.js', import.meta.url).href;
    // The echo: drain `there`, push each packet onto `back`, sleep until more.
    const code = `
      const { workerData } = require('node:worker_threads');
      import(${JSON.stringify(url)}).then(({ PacketRing }) => {
        const there = new PacketRing(workerData.there, workerData.s), back = new PacketRing(workerData.back, workerData.s);
        let left = workerData.total;
        // A pending Atomics.waitAsync does not keep a thread's event loop alive: this does.
        const alive = setInterval(() => {}, 1000);
        const pump = () => {
          there.drain((b) => { for (let k = 0; k < b.count; k++) { while (!back.push(b.buf, b.offset(k), b.lens[k])) back.publish(); left--; } back.publish(); }, 64);
          if (left > 0) there.waitNonEmpty(pump); else clearInterval(alive);
        };
        pump();
      });`;
    const total = 20_000;
    const w = new Worker(code, { eval: true, workerData: { there: there.sab, back: back.sab, s, total } });
    try {
      let sent = 0, got = 0, bad = 0;
      const done = new Promise<void>((resolve, reject) => {
        w.once('error', reject);
        const pump = (): void => {
          back.drain((b) => {
            for (let k = 0; k < b.count; k++) {
              const want = packet(got++, 200);
              const len = b.lens[k]!, off = b.offset(k);
              if (len !== want.length || Buffer.compare(b.buf.subarray(off, off + len), want) !== 0) bad++;
            }
          }, 64);
          // Send more while there is room (the worker's ring back may fill: it waits for us).
          while (sent < total && there.pending < s.frames - 1) {
            for (let i = 0; i < s.slots && sent < total; i++) { const p = packet(sent, 200); if (!there.push(p, 0, p.length)) break; sent++; }
            there.publish();
          }
          if (got >= total) resolve();
          else back.waitNonEmpty(pump);
        };
        pump();
      });
      const timer = setTimeout(() => {}, 25_000);
      await done;
      clearTimeout(timer);
      assert.equal(got, total);
      assert.equal(bad, 0);
      assert.equal(there.dropped, 0);
    } finally {
      await w.terminate();
    }
  });
});
