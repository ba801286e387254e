// In-memory I/O for the real data plane (DataPlane with its TunWrapper, Device and a Bind): a
// HostDevice whose "host" is the test, and a pair of Binds joined by a queue that delivers each
// flushed batch on a later turn of the event loop (setImmediate), as a socket would. Batches are
// preallocated: nothing here allocates per packet, so allocation can be measured through it.
import type { HostDevice, HostDeviceStats } from '../../src/tun/device.ts';
import type { Bind, BindReceiver } from '../../src/net/bind.ts';
import { RxBatch, TxBatch, slotSizeFor } from '../../src/net/batch.ts';
import { ENDPOINT_RAW_LEN, Endpoints, type Endpoint } from '../../src/net/endpoint.ts';

const SLOTS = 128;

/** Copies without allocating (Buffer.prototype.copy and subarray() make a view per call). */
function copyInto(src: Uint8Array, from: number, len: number, dst: Uint8Array, to: number): void {
  for (let k = 0; k < len; k++) dst[to + k] = src[from + k]!;
}

/** The host side as a test: inject() hands a batch to the data plane; writes are counted (and kept when asked). */
export class MemHost implements HostDevice {
  readonly name = 'mem0';
  readonly mtu: number;
  readonly rx: RxBatch;
  private onBatch: ((b: RxBatch) => void) | undefined;
  /** Packets the data plane wrote to the host. */
  written = 0;
  /** Bytes the data plane wrote to the host. */
  writtenBytes = 0;
  /** Copies of written packets, when keep is set. */
  readonly kept: Uint8Array[] = [];
  keep = false;
  private rxPackets = 0;

  constructor(mtu: number) {
    this.mtu = mtu;
    this.rx = new RxBatch({ slots: SLOTS, slotSize: slotSizeFor(mtu), headroom: 64 });
  }

  startReading(onBatch: (batch: RxBatch) => void): RxBatch {
    this.onBatch = onBatch;
    return this.rx;
  }

  /** Puts `count` copies of `pkt` into the receive batch and hands it to the reader. */
  inject(pkt: Uint8Array, count: number): void {
    const b = this.rx;
    for (let i = 0; i < count; i++) {
      b.buf.set(pkt, b.offset(i));
      b.lens[i] = pkt.length;
    }
    b.count = count;
    this.rxPackets += count;
    this.onBatch?.(b);
  }

  writeBatch(tx: TxBatch): number {
    const n = tx.count;
    for (let i = 0; i < n; i++) {
      this.writtenBytes += tx.lens[i]!;
      if (this.keep) this.kept.push(tx.buf.slice(tx.offsets[i]!, tx.offsets[i]! + tx.lens[i]!));
    }
    this.written += n;
    tx.clear();
    return n;
  }

  stats(): HostDeviceStats {
    return {
      rx: { packets: this.rxPackets, batches: 0, wakeups: 0, truncated: 0, errors: 0, kernelDrops: 0, gsoReads: 0, gsoSegments: 0, csumCompleted: 0, badGso: 0, groMessages: 0, groSegments: 0, lastErrno: 0, active: true },
      txPackets: this.written, txDropped: 0,
    };
  }

  close(): void {
    this.onBatch = undefined;
  }
}

/** One end of an in-memory UDP link. */
export class MemBind implements Bind {
  readonly endpoints: Endpoints;
  readonly self: Endpoint;
  readonly mark = 0;
  peer: MemBind | undefined;
  private recv: BindReceiver | undefined;
  private readonly out: TxBatch;
  /** Datagrams sent by reference from the shared (TUN receive) buffer, as UdpBind does. */
  private ref: TxBatch | undefined;
  /** Batches in flight to this end, as (buffer, count) from a ring of preallocated RxBatches. */
  private readonly inbox: RxBatch[] = [];
  private readonly spare: RxBatch[] = [];
  private scheduled = false;
  private readonly deliverBound = (): void => this.deliver();
  /** Datagrams this end sent, by first byte (message type). */
  readonly sentByType = [0, 0, 0, 0, 0];
  /** Datagrams sent to addresses other than the peer (e.g. cookie replies to a flooder): kept. */
  readonly elsewhere: { to: Endpoint; data: Uint8Array }[] = [];
  /** Datagrams dropped because no receive batch was free (the link's "socket buffer"). */
  dropped = 0;
  /** Deliver each flushed batch to the peer at once, inside flush() (for synchronous measurements). */
  sync = false;
  /** Lose every dropEvery-th transport message sent to the peer (0: none), counted in `lost`. */
  dropEvery = 0;
  lost = 0;
  private transportSent = 0;

  constructor(endpoints: Endpoints, ip: string, mtu: number, depth = 64) {
    this.endpoints = endpoints;
    this.self = endpoints.of(ip, 51820);
    this.out = new TxBatch({ slots: SLOTS, slotSize: slotSizeFor(mtu + 32, 0, 32), headroom: 0 });
    for (let i = 0; i < depth; i++) this.spare.push(new RxBatch({ slots: SLOTS, slotSize: slotSizeFor(mtu + 128, 0, 0), headroom: 0 }, endpoints));
  }

  get port(): number {
    return 51820;
  }

  open(recv: BindReceiver): void {
    this.recv = recv;
  }

  bind(): void {}
  setMark(): void {}
  /** The latest pauseGso() from the data plane (the path loses packets). */
  gsoPaused = false;
  pauseGso(paused: boolean): void {
    this.gsoPaused = paused;
  }
  shareBuffer(buf: Uint8Array): void {
    if (this.ref?.buf === buf) return;
    this.flush();
    this.ref = TxBatch.over(buf);
  }

  send(buf: Uint8Array, off: number, len: number, to: Endpoint): void {
    this.sentByType[buf[off]! < 5 ? buf[off]! : 0]!++;
    if (this.peer === undefined || to !== this.peer.self) {
      this.elsewhere.push({ to, data: buf.slice(off, off + len) });
      return;
    }
    // A lossy link: every dropEvery-th transport message to the peer is lost.
    if (buf[off] === 4 && this.dropEvery > 0 && ++this.transportSent % this.dropEvery === 0) {
      this.lost++;
      return;
    }
    const ref = this.ref;
    if (ref !== undefined && buf === ref.buf) {
      if (!ref.pushRef(off, len, to.raw)) { this.flush(); ref.pushRef(off, len, to.raw); }
    } else if (!this.out.push(buf, off, len, to.raw)) {
      this.flush();
      this.out.push(buf, off, len, to.raw);
    }
  }

  flush(): void {
    const out = this.out, ref = this.ref, peer = this.peer;
    if (ref !== undefined && ref.count > 0 && peer !== undefined) peer.accept(ref, this.self);
    if (out.count > 0 && peer !== undefined) peer.accept(out, this.self);
    ref?.clear();
    out.clear();
  }

  /** Takes a batch of datagrams from `from` into a free receive batch. */
  accept(tx: TxBatch, from: Endpoint): void {
    const b = this.spare.pop();
    if (b === undefined) { this.dropped += tx.count; return; }
    for (let i = 0; i < tx.count; i++) {
      const o = b.offset(i);
      copyInto(tx.buf, tx.offsets[i]!, tx.lens[i]!, b.buf, o);
      b.lens[i] = tx.lens[i]!;
      b.addrs!.set(from.raw, i * ENDPOINT_RAW_LEN);
    }
    b.count = tx.count;
    if (this.sync) {
      this.recv?.receiveBatch(b);
      this.spare.push(b);
      return;
    }
    this.inbox.push(b);
    if (!this.scheduled) { this.scheduled = true; setImmediate(this.deliverBound); }
  }

  /** Hands a batch of datagrams from anywhere (a flooder) to this end, on a later turn. */
  inject(msgs: Uint8Array[], from: Endpoint): void {
    const b = this.spare.pop();
    if (b === undefined) { this.dropped += msgs.length; return; }
    for (let i = 0; i < msgs.length; i++) {
      b.buf.set(msgs[i]!, b.offset(i));
      b.lens[i] = msgs[i]!.length;
      b.addrs!.set(from.raw, i * ENDPOINT_RAW_LEN);
    }
    b.count = msgs.length;
    this.inbox.push(b);
    if (!this.scheduled) { this.scheduled = true; setImmediate(this.deliverBound); }
  }

  /** Batches waiting for delivery. */
  get pending(): number {
    return this.inbox.length;
  }

  private deliver(): void {
    this.scheduled = false;
    // One batch per turn, as a socket reader gets one recvmmsg per poll.
    const b = this.inbox.shift();
    if (b === undefined) return;
    this.recv?.receiveBatch(b);
    this.spare.push(b);
    if (this.inbox.length > 0) { this.scheduled = true; setImmediate(this.deliverBound); }
  }

  socketCounters(): Record<string, number> {
    return { memDropped: this.dropped };
  }

  close(): void {
    this.recv = undefined;
  }
}

/** Two MemBinds joined: a at 198.18.0.1, b at 198.18.0.2. */
export function memLink(mtu: number): { a: MemBind; b: MemBind; endpoints: Endpoints } {
  const endpoints = new Endpoints();
  const a = new MemBind(endpoints, '198.18.0.1', mtu);
  const b = new MemBind(endpoints, '198.18.0.2', mtu);
  a.peer = b;
  b.peer = a;
  return { a, b, endpoints };
}
