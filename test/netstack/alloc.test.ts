// Allocation per segment in the TCP/IP stack: two Netstacks joined by a wire made of preallocated
// slots (PacketSink on each side, so segments are built in place as in the agent), a bulk transfer
// A -> B with B consuming at once, on an integer clock. Bytes allocated are measured as in
// test/wg/alloc.test.ts: v8.GCProfiler after a full collection, what each collection freed plus
// what the heap grew by, divided by the data segments carried; the least of three windows counts.
//
// What is left per segment is Node 20's Buffer.prototype.copy: for a sub-range it makes a
// Uint8Array view of the source (~100-140 bytes of young garbage) before the memcpy; the send
// ring copies each segment's payload out with it. Young garbage that dies at once costs a
// scavenge per ~100k segments, so it is kept, and the budget says so: anything per segment beyond
// that one view (an object, a closure) shows here. Measured: 137-171 bytes per segment; with the
// ring copying by a loop instead, 25-41, so ~110 is the view. A sampling heap profile (inspector,
// collected objects included) puts the other ~30 in Tcb.processAck and Tcb.output. The likely
// cause is sequence numbers at or above 2^31: kept as uint32 (>>> 0), those are heap numbers
// rather than small integers.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Netstack, type PacketSink } from '../../src/netstack/stack.ts';
import type { Tcb, TcpHandler } from '../../src/netstack/tcp.ts';

v8.setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Preallocated packet slots: what a stack sends waits here until drained into the other stack. */
class SlotWire implements PacketSink {
  readonly buf = new Uint8Array(512 * 1536);
  readonly lens = new Int32Array(512);
  count = 0;
  dropped = 0;
  reserve(max: number): number {
    if (this.count >= 512 || max > 1536) { this.dropped++; return -1; }
    return this.count * 1536;
  }
  commit(len: number): void {
    this.lens[this.count++] = len;
  }
  drainInto(s: Netstack): number {
    const n = this.count;
    for (let i = 0; i < n; i++) s.input(this.buf, i * 1536, this.lens[i]!);
    this.count = 0;
    s.endBatch();
    return n;
  }
}

/** Takes data and consumes it at once, allocating nothing. */
class Drain implements TcpHandler {
  bytes = 0;
  onData(c: Tcb, _buf: Uint8Array, _off: number, len: number): void { this.bytes += len; c.unread = 0; }
  onEnd(): void {}
  onWritable(): void {}
  onClose(): void {}
}

describe('netstack allocation per segment', () => {
  it('a bulk transfer allocates only the payload copy view per segment on both sides together: under 256 bytes per data segment', (t0) => {
    let t = 1000;
    const now = (): number => t;
    const wa = new SlotWire(), wb = new SlotWire();
    const noOut = (): void => { throw new Error('unexpected packet outside the sink'); };
    const a = new Netstack({ now, output: noOut, sink: wa });
    const b = new Netstack({ now, output: noOut, sink: wb });
    a.setAddresses(['100.64.0.1/32']);
    b.setAddresses(['100.64.0.2/32']);
    const drain = new Drain();
    b.listen(80, (c) => { c.handler = drain; });
    const tcb = a.connect('100.64.0.2', 80, { onData() {}, onEnd() {}, onWritable() {}, onClose() {} });
    const chunk = new Uint8Array(64 * 1024).fill(7);
    // One round: top up A's send buffer, then move packets both ways until the wire is quiet.
    let segments = 0;
    const round = (): void => {
      tcb.write(chunk, 0, Math.min(chunk.length, tcb.writable));
      for (let k = 0; k < 64 && (wa.count > 0 || wb.count > 0); k++) {
        t += 1;
        segments += wa.drainInto(b);
        wb.drainInto(a);
        if (b.wakeAt <= t) b.tick();
        if (a.wakeAt <= t) a.tick();
      }
    };
    for (let i = 0; i < 300; i++) round(); // handshake, slow start, JIT warm-up
    assert.ok(drain.bytes > 10 * 1024 * 1024, `warm-up moved ${drain.bytes} bytes`);
    let best = Infinity, bestSegs = 0;
    for (let w = 0; w < 3; w++) {
      gc();
      segments = 0;
      const prof = new v8.GCProfiler();
      const h0 = v8.getHeapStatistics();
      prof.start();
      for (let i = 0; i < 300; i++) round();
      const h1 = v8.getHeapStatistics();
      const stats = prof.stop().statistics;
      let bytes = (h1.used_heap_size - h0.used_heap_size) + (h1.external_memory - h0.external_memory);
      for (const s of stats) {
        bytes += s.beforeGC.heapStatistics.usedHeapSize - s.afterGC.heapStatistics.usedHeapSize;
        bytes += s.beforeGC.heapStatistics.externalMemory - s.afterGC.heapStatistics.externalMemory;
      }
      const per = Math.max(0, bytes) / segments;
      if (per < best) { best = per; bestSegs = segments; }
    }
    assert.equal(wa.dropped + wb.dropped, 0);
    assert.equal(a.counters.dropTcpBadChecksum! + b.counters.dropTcpBadChecksum!, 0);
    assert.ok(bestSegs > 10_000, `${bestSegs} segments in the window`);
    t0.diagnostic(`${best.toFixed(1)} bytes allocated per data segment (both stacks), over ${bestSegs} segments`);
    assert.ok(best < 256, `${best.toFixed(2)} bytes allocated per data segment`);
  });
});
