// The batched transport path: a device with `batched: true` queues seals and opens and flush()
// does a whole batch in one AEAD call, while counters, replay window, keypair confirmation and
// cryptokey routing stay per packet and in order. Batches here are laid out like the I/O layer's
// receive slots: every packet of a batch in one buffer.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { defaultCrypto } from '../../src/crypto/backend.ts';
import type { NativeTransport } from '../../src/crypto/transport.ts';
import { Device, MAX_QUEUED_JOBS, type WgSink } from '../../src/wg/device.ts';
import { Endpoints, type Endpoint } from '../../src/net/endpoint.ts';
import { readCounter } from '../../src/wg/replay.ts';
import { readU32LE } from '../../src/wg/messages.ts';
import { FakeClock, ipv4, type Datagram } from '../harness/wgpipe.ts';
import { rand } from '../harness/bytes.ts';

const crypto = defaultCrypto();
const nat = crypto.transport as NativeTransport;

const SLOT = 16 + 1500 + 64;

interface Node {
  name: string;
  ip: string;
  addr: Endpoint;
  dev: Device;
  sink: WgSink;
  tun: Uint8Array[];
}

/** Batched devices on one in-memory network; datagrams move only when a test says so. */
class Net {
  readonly clock = new FakeClock();
  readonly eps = new Endpoints();
  readonly nodes: Node[] = [];
  readonly inFlight: Datagram[] = [];

  add(name: string, ip: string, addr: string): Node {
    const dev = new Device({ clock: this.clock, crypto, batched: true });
    dev.setPrivateKey(crypto.x25519.generatePrivate(rand));
    const ep = this.eps.of(addr, 51820);
    const n: Node = {
      name, ip, addr: ep, dev, tun: [],
      sink: {
        sendUdp: (buf, off, len, to) => { this.inFlight.push({ from: ep, to, bytes: buf.slice(off, off + len) }); },
        writeTun: (buf, off, len) => { n.tun.push(buf.slice(off, off + len)); },
      },
    };
    this.nodes.push(n);
    return n;
  }

  connect(x: Node, y: Node): void {
    x.dev.setPeer(y.dev.publicKey()!, { endpoint: y.addr, allowedIPs: [`${y.ip}/32`] });
    y.dev.setPeer(x.dev.publicKey()!, { endpoint: x.addr, allowedIPs: [`${x.ip}/32`] });
  }

  /** Sends packets from x's TUN side as one batch (one buffer of slots), then flushes. */
  sendBatch(x: Node, packets: Uint8Array[]): void {
    const buf = new Uint8Array(packets.length * SLOT);
    packets.forEach((p, i) => buf.set(p, i * SLOT + 16));
    packets.forEach((p, i) => x.dev.sendPacketInPlace(buf, i * SLOT + 16, p.length, SLOT - 16, x.sink));
    x.dev.flush(x.sink);
  }

  /** Hands datagrams to x as one receive batch (one buffer of slots), then flushes. */
  receiveBatch(x: Node, dgrams: Datagram[]): void {
    const buf = new Uint8Array(dgrams.length * SLOT);
    dgrams.forEach((d, i) => buf.set(d.bytes, i * SLOT));
    dgrams.forEach((d, i) => x.dev.receiveDatagramInPlace(buf, i * SLOT, d.bytes.length, d.from, x.sink));
    x.dev.flush(x.sink);
  }

  /** Takes the in-flight datagrams addressed to x. */
  take(x: Node, pred: (d: Datagram) => boolean = () => true): Datagram[] {
    const out: Datagram[] = [];
    for (let i = 0; i < this.inFlight.length;) {
      const d = this.inFlight[i]!;
      if (d.to === x.addr && pred(d)) { out.push(d); this.inFlight.splice(i, 1); } else i++;
    }
    return out;
  }

  /** Delivers everything, a batch per receiver, until nothing is in flight. */
  settle(): void {
    for (let n = 0; this.inFlight.length > 0; n++) {
      if (n > 1000) throw new Error('net does not settle');
      for (const x of this.nodes) { const b = this.take(x); if (b.length > 0) this.receiveBatch(x, b); }
    }
  }
}

const isTransport = (d: Datagram): boolean => readU32LE(d.bytes, 0) === 4;
const counterOf = (d: Datagram): number => readCounter(d.bytes, 8);
const receiverOf = (d: Datagram): number => readU32LE(d.bytes, 4);

/** A hub with two peers, sessions up both ways. */
function star(): { net: Net; hub: Node; p1: Node; p2: Node } {
  const net = new Net();
  const hub = net.add('hub', '10.0.0.1', '198.18.0.1');
  const p1 = net.add('p1', '10.0.0.2', '198.18.0.2');
  const p2 = net.add('p2', '10.0.0.3', '198.18.0.3');
  net.connect(hub, p1);
  net.connect(hub, p2);
  for (const p of [p1, p2]) {
    net.sendBatch(p, [ipv4(p.ip, hub.ip, 8)]);
    net.settle();
    net.sendBatch(hub, [ipv4(hub.ip, p.ip, 8)]);
    net.settle();
  }
  for (const n of net.nodes) n.tun.length = 0;
  return { net, hub, p1, p2 };
}

describe('Device batched transport path', () => {
  it('seals a TUN batch for two peers in one AEAD call, with per-peer counters in order', () => {
    const { net, hub, p1, p2 } = star();
    const pkts = Array.from({ length: 20 }, (_, i) => ipv4(hub.ip, i % 3 === 0 ? p2.ip : p1.ip, 40 + i * 50, i));
    const before = nat.stats();
    net.sendBatch(hub, pkts);
    const after = nat.stats();
    assert.equal(after.serialBatches + after.parallelBatches - before.serialBatches - before.parallelBatches, 1, 'one native call');
    const to1 = net.take(p1), to2 = net.take(p2);
    assert.equal(to1.length + to2.length, 20);
    for (const list of [to1, to2]) {
      const ctrs = list.map(counterOf);
      assert.deepEqual(ctrs, [...ctrs].sort((a, b) => a - b));
      assert.equal(new Set(ctrs).size, ctrs.length);
    }
    net.receiveBatch(p1, to1);
    net.receiveBatch(p2, to2);
    assert.deepEqual(p1.tun, pkts.filter((_, i) => i % 3 !== 0));
    assert.deepEqual(p2.tun, pkts.filter((_, i) => i % 3 === 0));
  });

  it('opens a batch from two peers in one call and drops replays and tampered packets inside it, exactly', () => {
    const { net, hub, p1, p2 } = star();
    const a = Array.from({ length: 5 }, (_, i) => ipv4(p1.ip, hub.ip, 100 + i, i));
    const b = Array.from({ length: 5 }, (_, i) => ipv4(p2.ip, hub.ip, 200 + i, 0x40 + i));
    net.sendBatch(p1, a);
    const d1 = net.take(hub);
    net.sendBatch(p2, b);
    const d2 = net.take(hub);
    const tamper = (d: Datagram, at: number): Datagram => { const bytes = d.bytes.slice(); bytes[at]! ^= 4; return { ...d, bytes }; };
    const unknown = d1[4]!.bytes.slice();
    unknown[4]! ^= 0xff; // receiver index nobody has
    const batch: Datagram[] = [
      d1[0]!, d2[0]!,
      tamper(d1[1]!, 40), // ciphertext
      d2[1]!,
      d1[0]!, // a replay of a packet earlier in the same batch
      tamper(d2[2]!, d2[2]!.bytes.length - 3), // tag
      d1[2]!, d2[3]!,
      { ...d1[4]!, bytes: unknown },
      d1[3]!, d2[3]!, d2[3]!, // twice more
      d1[4]!, d2[4]!,
      d1[1]!, // the real one, after its tampered copy
    ];
    const before = nat.stats();
    const c0 = { ...hub.dev.counters };
    net.receiveBatch(hub, batch);
    const after = nat.stats();
    assert.equal(after.serialBatches + after.parallelBatches - before.serialBatches - before.parallelBatches, 1, 'one native call');
    assert.deepEqual(hub.tun, [a[0], b[0], b[1], a[2], b[3], a[3], a[4], b[4], a[1]]);
    const c = hub.dev.counters;
    assert.equal(c.dropRxDecryptFailed! - c0.dropRxDecryptFailed!, 2);
    assert.equal(c.dropRxReplay! - c0.dropRxReplay!, 3);
    assert.equal(c.dropRxUnknownIndex! - c0.dropRxUnknownIndex!, 1);
    assert.equal(c.rxData! - c0.rxData!, 9);
    // A tampered packet does not move the endpoint or count as traffic; the peers stay where they were.
    assert.deepEqual(hub.dev.peers().map((p) => p.endpoint).sort(), [p1.addr, p2.addr].sort());
  });

  it('confirms the next keypair inside a batch and still takes packets under the previous one in the same batch', () => {
    const { net, hub, p1 } = star();
    // Session 1 (p1 initiated). A packet under it is held back.
    net.sendBatch(p1, [ipv4(p1.ip, hub.ip, 10, 1)]);
    const x0 = net.take(hub);
    // After REKEY_AFTER_TIME p1 sends under session 1 once more, and initiates session 2.
    net.clock.t += 121_000;
    net.sendBatch(p1, [ipv4(p1.ip, hub.ip, 11, 2)]);
    const x1 = net.take(hub, isTransport);
    const init = net.take(hub);
    assert.equal(x0.length + x1.length, 2);
    assert.equal(init.length, 1);
    net.receiveBatch(hub, init); // hub: session 2 waits in `next`
    net.receiveBatch(p1, net.take(p1)); // p1: session 2 is current; sends a keepalive under it
    const ka = net.take(hub);
    assert.equal(ka.length, 1);
    assert.equal(ka[0]!.bytes.length, 32);
    net.sendBatch(p1, [ipv4(p1.ip, hub.ip, 12, 3), ipv4(p1.ip, hub.ip, 13, 4)]);
    const x23 = net.take(hub);
    assert.notEqual(receiverOf(x23[0]!), receiverOf(x0[0]!), 'session 2 has a new index');
    const hs0 = hub.dev.counters.handshakesCompleted!;
    // One batch: new-session data first (confirms `next`), then old-session data, the keepalive, more.
    net.receiveBatch(hub, [x23[0]!, x0[0]!, ka[0]!, x1[0]!, x23[1]!]);
    assert.equal(hub.dev.counters.handshakesCompleted, hs0 + 1);
    assert.deepEqual(hub.tun, [ipv4(p1.ip, hub.ip, 12, 3), ipv4(p1.ip, hub.ip, 10, 1), ipv4(p1.ip, hub.ip, 11, 2), ipv4(p1.ip, hub.ip, 13, 4)]);
    // The hub now sends under session 2.
    net.sendBatch(hub, [ipv4(hub.ip, p1.ip, 20)]);
    const back = net.take(p1);
    assert.equal(receiverOf(back[0]!), readU32LE(init[0]!.bytes, 4));
  });

  it('frees a keypair released while its packets are queued only after they are sealed', () => {
    const { net, hub, p1 } = star();
    const live = nat.stats().liveKeys;
    const buf = new Uint8Array(SLOT);
    buf.set(ipv4(hub.ip, p1.ip, 50), 16);
    hub.dev.sendPacketInPlace(buf, 16, 70, SLOT - 16, hub.sink);
    hub.dev.removePeer(p1.dev.publicKey()!); // releases its keypair while the seal is queued
    assert.equal(nat.stats().liveKeys, live, 'not freed yet');
    hub.dev.flush(hub.sink);
    assert.equal(nat.stats().liveKeys, live - 2, 'freed after the flush');
    net.receiveBatch(p1, net.take(p1));
    assert.deepEqual(p1.tun, [ipv4(hub.ip, p1.ip, 50)]);
  });

  it('drops the rest of a batch when the sink throws, and the next batch is sealed once, normally', () => {
    const { net, hub, p1 } = star();
    const buf = new Uint8Array(3 * SLOT);
    for (let i = 0; i < 3; i++) {
      buf.set(ipv4(hub.ip, p1.ip, 30, i), i * SLOT + 16);
      hub.dev.sendPacketInPlace(buf, i * SLOT + 16, 50, SLOT - 16, hub.sink);
    }
    assert.throws(() => hub.dev.flush({ sendUdp: () => { throw new Error('sink broke'); }, writeTun: () => {} }), /sink broke/);
    hub.dev.flush(hub.sink);
    assert.equal(net.take(p1).length, 0, 'nothing left over from the broken batch');
    net.sendBatch(hub, [ipv4(hub.ip, p1.ip, 40, 7)]);
    net.receiveBatch(p1, net.take(p1));
    assert.deepEqual(p1.tun, [ipv4(hub.ip, p1.ip, 40, 7)]);
  });

  it('flushes by itself when more than MAX_QUEUED_JOBS packets are queued, keeping order', () => {
    const { net, hub, p1 } = star();
    const n = MAX_QUEUED_JOBS + 50;
    const pkts = Array.from({ length: n }, (_, i) => ipv4(hub.ip, p1.ip, 20, i & 0xff));
    net.sendBatch(hub, pkts);
    const d = net.take(p1);
    assert.equal(d.length, n);
    assert.deepEqual(d.map(counterOf), d.map((_, i) => d.map(counterOf)[0]! + i));
    net.receiveBatch(p1, d);
    assert.equal(p1.tun.length, n);
    assert.deepEqual(p1.tun[n - 1], pkts[n - 1]);
  });

  it('keeps per-peer order when the worker thread seals and opens half of each batch', () => {
    const { net, hub, p1, p2 } = star();
    const old = nat.setParallelMin(8);
    try {
      const before = nat.stats();
      for (let round = 0; round < 50 && nat.stats().workerJobs === before.workerJobs; round++) {
        p1.tun.length = 0;
        p2.tun.length = 0;
        const pkts = Array.from({ length: 100 }, (_, i) => ipv4(hub.ip, i & 1 ? p1.ip : p2.ip, 1000 + i, i));
        net.sendBatch(hub, pkts);
        const to1 = net.take(p1), to2 = net.take(p2);
        net.receiveBatch(p1, to1);
        net.receiveBatch(p2, to2);
        assert.deepEqual(p1.tun, pkts.filter((_, i) => i & 1));
        assert.deepEqual(p2.tun, pkts.filter((_, i) => !(i & 1)));
      }
      assert.ok(nat.stats().parallelBatches >= before.parallelBatches + 3);
      assert.ok(nat.stats().workerJobs > before.workerJobs, 'the worker sealed or opened some packets');
    } finally {
      nat.setParallelMin(old);
    }
  });
});
