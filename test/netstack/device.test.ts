// NetstackDevice: the stack as the data plane's host device. Two devices joined batch to batch (what
// one hands the data plane, the other takes as decrypted input); TCP segments are built in place in
// the outgoing batches (PacketSink) and must arrive with valid checksums.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { NetstackDevice } from '../../src/netstack/device.ts';
import { TcpStream } from '../../src/netstack/stream.ts';
import { DEFAULT_HEADROOM, DEFAULT_TAILROOM, slotSizeFor, type RxBatch } from '../../src/net/batch.ts';
import { PacketRing } from '../../src/netstack/ring-shared.ts';
import type { Tcb } from '../../src/netstack/tcp.ts';

function join(a: NetstackDevice, b: NetstackDevice): { batches: number; packets: number } {
  const seen = { batches: 0, packets: 0 };
  const to = (dst: NetstackDevice) => (batch: RxBatch): void => {
    seen.batches++;
    const pkts: Uint8Array[] = [];
    for (let i = 0; i < batch.count; i++) pkts.push(batch.buf.slice(batch.offset(i), batch.offset(i) + batch.lens[i]!));
    seen.packets += pkts.length;
    // The batch is reused after return: deliver copies, later, as a network would.
    setImmediate(() => { for (const p of pkts) dst.stack.input(p, 0, p.length); dst.stack.endBatch(); dst.driver.schedule(); });
  };
  a.startReading(to(b));
  b.startReading(to(a));
  return seen;
}

const sha = (x: Buffer): string => createHash('sha256').update(x).digest('hex');
const quiet = { onData() {}, onEnd() {}, onWritable() {}, onClose() {} };

/** a connects to b's port 80; 2 MB go each way through TcpStreams; both sides' bytes arrive hash-identical. */
async function exchange(a: NetstackDevice, b: NetstackDevice): Promise<void> {
  const up = randomBytes(2 * 1024 * 1024), down = randomBytes(2 * 1024 * 1024 + 5);
  const gotAtB: Buffer[] = [];
  const bDone = new Promise<void>((resolve) => {
    b.stack.listen(80, (t: Tcb) => {
      const s = new TcpStream(t, () => b.driver.schedule());
      s.on('data', (d: Buffer) => gotAtB.push(d));
      s.on('end', () => resolve());
      s.end(down);
    });
  });
  const s = new TcpStream(a.stack.connect('100.64.0.2', 80, quiet), () => a.driver.schedule());
  a.driver.schedule();
  const gotAtA: Buffer[] = [];
  s.on('data', (d: Buffer) => gotAtA.push(d));
  const aDone = new Promise<void>((resolve) => s.on('end', () => resolve()));
  s.end(up);
  await Promise.all([aDone, bDone]);
  assert.equal(sha(Buffer.concat(gotAtB)), sha(up));
  assert.equal(sha(Buffer.concat(gotAtA)), sha(down));
}

describe('NetstackDevice', () => {
  it('builds TCP segments in its outgoing batches: 2 MB each way arrive intact, none dropped for bad checksums', { timeout: 30_000 }, async () => {
    const a = new NetstackDevice(), b = new NetstackDevice();
    a.stack.setAddresses(['100.64.0.1/32']);
    b.stack.setAddresses(['100.64.0.2/32']);
    const seen = join(a, b);
    await exchange(a, b);
    for (const d of [a, b]) {
      assert.equal(d.stack.counters.dropTcpBadChecksum, 0);
      assert.equal(d.stack.counters.dropIpBadChecksum, 0);
      assert.equal(d.stack.counters.dropOutputFull, 0);
    }
    // Segments went out many to a batch, not one per batch.
    assert.ok(seen.packets > 3000 && seen.batches < seen.packets / 4, `${seen.packets} packets in ${seen.batches} batches`);
    a.close();
    b.close();
  });

  it('outputTo a ring: segments are built in its frames (2 MB each way intact through it), the rest of a frame goes at the flush, and a full ring drops and counts once', { timeout: 30_000 }, async () => {
    const a = new NetstackDevice(), b = new NetstackDevice();
    a.stack.setAddresses(['100.64.0.1/32']);
    b.stack.setAddresses(['100.64.0.2/32']);
    const ring = PacketRing.create({ frames: 4, slots: 16, slotSize: slotSizeFor(1280, DEFAULT_HEADROOM, DEFAULT_TAILROOM), headroom: DEFAULT_HEADROOM });
    a.outputTo(ring);
    let frames = 0;
    // The other thread: takes published frames a turn later, as the data plane would.
    const pump = setInterval(() => {
      ring.drain((f) => { frames++; for (let i = 0; i < f.count; i++) b.stack.input(f.buf, f.offset(i), f.lens[i]!); }, 4);
      b.stack.endBatch(); b.driver.schedule();
    }, 1);
    b.startReading((batch) => {
      const pkts: Uint8Array[] = [];
      for (let i = 0; i < batch.count; i++) pkts.push(batch.buf.slice(batch.offset(i), batch.offset(i) + batch.lens[i]!));
      setImmediate(() => { for (const p of pkts) a.stack.input(p, 0, p.length); a.stack.endBatch(); a.driver.schedule(); });
    });
    await exchange(a, b);
    clearInterval(pump);
    assert.equal(b.stack.counters.dropTcpBadChecksum, 0);
    assert.ok(frames > 100, `${frames} frames`);
    // Nobody drains now: 4 frames of 16 fill, then segments are dropped and counted by the ring only.
    const dropsBefore = ring.dropped, outBefore = a.stats().txDropped, fullBefore = a.stack.counters.dropOutputFull ?? 0;
    for (let i = 0; i < 81; i++) a.stack.connect('100.64.0.2', 100 + i, quiet);
    await new Promise((r) => setImmediate(r));
    assert.equal(ring.pending, 4, 'the ring is full');
    const dropped = ring.dropped - dropsBefore;
    assert.ok(dropped >= 81 - 4 * 16, `SYNs past the ring's 64 slots dropped (${dropped})`);
    assert.equal((a.stack.counters.dropOutputFull ?? 0) - fullBefore, dropped, 'the stack saw each refusal');
    assert.equal(a.stats().txDropped, outBefore, 'not counted twice');
    a.close();
    b.close();
  });

  it('drops and counts segments when nothing reads its batches', () => {
    const a = new NetstackDevice();
    a.stack.setAddresses(['100.64.0.1/32']);
    a.stack.connect('100.64.0.2', 80, quiet);
    assert.equal(a.stack.counters.dropOutputFull, 1);
    assert.equal(a.stats().txDropped, 1);
    a.close();
  });
});
